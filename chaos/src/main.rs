//! `chaos <scenario>|all [--minutes N] [--seconds N] [--seed S]`: runs fault scenarios on the
//! 3-node cluster (`cargo xtask chaos …` starts it first) and prints per scenario the records,
//! faults and invariant violations; exits non-zero on any violation or failed run.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "chaos", about = "Fault scenarios on the 3-node cluster, with an invariant checker")]
struct Args {
    /// A scenario (producer, groups, eos, atomic, retry) or `all`.
    scenario: String,
    /// How long each scenario runs under faults.
    #[arg(long, default_value_t = 5)]
    minutes: u64,
    /// Run each scenario this many seconds instead of `--minutes`.
    #[arg(long)]
    seconds: Option<u64>,
    /// Seed of the fault schedule; random (and printed) when not given.
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Some(bootstrap) = kafka_wire_tests::bootstrap_3() else {
        eprintln!("the 3-node cluster is not up: start it with `cargo xtask kafka up --nodes 3`");
        return ExitCode::FAILURE;
    };
    let seed = args.seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        now.as_nanos() as u64 ^ u64::from(std::process::id())
    });
    let duration = Duration::from_secs(args.seconds.unwrap_or(args.minutes * 60));
    let scenarios: Vec<&str> =
        if args.scenario == "all" { chaos::SCENARIOS.to_vec() } else { vec![args.scenario.as_str()] };
    eprintln!("[chaos] seed {seed} (rerun with --seed {seed}); {duration:?} per scenario; cluster {bootstrap}");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = chaos::RunConfig { bootstrap, duration, seed };
    let mut failed = false;
    for name in scenarios {
        match runtime.block_on(chaos::run(name, &config)) {
            Ok(report) => {
                println!("{report}");
                failed |= !report.ok();
            }
            Err(e) => {
                println!("[chaos] {name}: the run failed: {e}");
                failed = true;
            }
        }
    }
    println!("[chaos] seed {seed}");
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
