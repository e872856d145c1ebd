//! `contacts-import`: the demo's server (`cargo xtask demo` runs it with a local Kafka), or,
//! with `--generate N`, a CSV of N contacts on standard output.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use contacts_import::{Demo, DemoConfig};

/// The contacts-import demo: the six event-driven patterns behind one web page.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// `bootstrap.servers` of the Kafka cluster.
    #[arg(long, env = "KAFKA_BOOTSTRAP", default_value = "127.0.0.1:9092")]
    bootstrap: String,
    /// Where the page is served.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Prefixed to every topic and group name.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Importer instances.
    #[arg(long, default_value_t = 2)]
    importers: usize,
    /// Contacts per job (1 to 1000).
    #[arg(long, default_value_t = 100)]
    job_size: usize,
    /// The fraction of country-code lookups that fail (0 to 1), to see the retries.
    #[arg(long, default_value_t = 0.05)]
    lookup_failures: f64,
    /// Where the view store's file goes.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Prints a CSV of this many contacts (all valid) and exits.
    #[arg(long, value_name = "CONTACTS")]
    generate: Option<usize>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(contacts) = args.generate {
        if contacts == 0 || contacts > contacts_import::MAX_CONTACTS {
            eprintln!("--generate takes 1 to {} contacts", contacts_import::MAX_CONTACTS);
            return std::process::ExitCode::from(2);
        }
        print!("{}", contacts_import::generate_csv(contacts));
        return std::process::ExitCode::SUCCESS;
    }
    let mut config = DemoConfig::new(&args.bootstrap);
    config.listen = args.listen;
    config.prefix = args.prefix;
    config.importers = args.importers;
    config.job_size = args.job_size;
    config.lookup_failures = args.lookup_failures;
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    eprintln!("starting the demo against {} ...", config.bootstrap);
    let demo = match Demo::start(config).await {
        Ok(demo) => demo,
        Err(e) => {
            eprintln!("the demo did not start: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("contacts-import demo: open {}", demo.url());
    println!("(Ctrl-C stops it)");
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("stopping ...");
    demo.stop().await;
    std::process::ExitCode::SUCCESS
}
