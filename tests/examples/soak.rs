//! The bounded-memory soak (`kafka_wire_tests::soak`) for a set time against the 1-node cluster:
//!
//! ```text
//! cargo run --release -p kafka-wire-tests --example soak -- --minutes 10 [--out bench/results] [--bandwidth 2000000]
//! ```
//!
//! Prints each sample, then a summary; writes `<out>/<date>-soak.csv` and `<out>/<date>-soak.png`
//! (a chart of the producer's buffered bytes, the consumer's prefetched bytes and RSS over time,
//! with the configured limits; its labels need DejaVu Sans, Debian's `fonts-dejavu-core`).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kafka_wire_tests::bootstrap;
use kafka_wire_tests::soak::{run, Sample, SoakConfig, SoakReport};

/// Reads one figure of a sample.
type Figure = fn(&Sample) -> u64;

fn main() {
    let mut minutes = 10.0f64;
    let mut out = kafka_wire_tests::workspace_root().join("bench/results");
    let mut bandwidth = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--minutes" => minutes = value().parse().expect("--minutes: a number"),
            "--out" => out = PathBuf::from(value()),
            "--bandwidth" => bandwidth = Some(value().parse().expect("--bandwidth: bytes/s")),
            other => panic!("unknown argument {other:?} (--minutes N, --out DIR, --bandwidth BYTES_PER_S)"),
        }
    }
    let mut config = SoakConfig::new(bootstrap(), Duration::from_secs_f64(minutes * 60.0));
    if let Some(b) = bandwidth {
        config.bandwidth = b;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    println!("load average at start: {}", loadavg());
    let report = runtime.block_on(run(config, |s| {
        println!(
            "t={:>6.1}s acked={:>9} consumed={:>9} producer_buffered={:>9} consumer_prefetched={:>9} rss={:>10}",
            s.t, s.acked, s.consumed, s.producer_buffered, s.consumer_prefetched, s.rss
        )
    }));
    println!("{}", report.summary());
    println!("load average at end: {}", loadavg());
    std::fs::create_dir_all(&out).expect("create the output folder");
    let stem = format!("{}-soak", today());
    let csv = out.join(format!("{stem}.csv"));
    std::fs::write(&csv, report.csv()).expect("write the CSV");
    let png = out.join(format!("{stem}.png"));
    chart(&png, &report).expect("draw the chart");
    println!("wrote {} and {}", csv.display(), png.display());
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `YYYY-MM-DD` (UTC) of now.
fn today() -> String {
    let days = (SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs() / 86_400) as i64;
    // Days since 1970-01-01 to a civil date (the proleptic Gregorian calendar, in 400-year eras).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Buffered, prefetched and RSS in MiB over time, with the two limits as dashed lines.
fn chart(path: &Path, report: &SoakReport) -> Result<(), String> {
    use plotters::prelude::*;
    let e = |e: &dyn std::fmt::Debug| format!("{e:?}");
    let font = ["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"]
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or("no DejaVuSans.ttf for the chart's labels")?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(font.into_boxed_slice()))
        .map_err(|_| "DejaVuSans.ttf is not a usable font")?;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let c = &report.config;
    let end = report.samples.last().map_or(1.0, |s| s.t);
    let top = report
        .samples
        .iter()
        .map(|s| mib(s.rss).max(mib(s.producer_buffered)).max(mib(s.consumer_prefetched)))
        .fold(mib(c.prefetch_bound()), f64::max)
        * 1.1;
    let root = BitMapBackend::new(path, (1400, 700)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let caption = format!(
        "soak: {:.0} s through a proxy at {:.1} MB/s up, {:.1} MB/s down ({} records acknowledged)",
        end,
        c.bandwidth as f64 / 1e6,
        c.bandwidth_down as f64 / 1e6,
        report.acked
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end, 0f64..top)
        .map_err(|x| e(&x))?;
    chart.configure_mesh().x_desc("seconds").y_desc("MiB").label_style(("sans-serif", 14)).draw().map_err(|x| e(&x))?;
    let series: [(&str, RGBColor, Figure); 3] = [
        ("process RSS", BLACK, |s| s.rss),
        ("producer buffered bytes", BLUE, |s| s.producer_buffered),
        ("consumer prefetched bytes", RED, |s| s.consumer_prefetched),
    ];
    for (label, color, get) in series {
        chart
            .draw_series(LineSeries::new(report.samples.iter().map(|s| (s.t, mib(get(s)))), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    let limits = [
        ("buffer.memory", BLUE, mib(c.buffer_memory as u64)),
        ("queued.max.messages.kbytes + fetch.max.bytes", RED, mib(c.prefetch_bound())),
    ];
    for (label, color, y) in limits {
        chart
            .draw_series(DashedLineSeries::new([(0.0, y), (end, y)], 8, 6, color.mix(0.6).stroke_width(1)))
            .map_err(|x| e(&x))?
            .label(label)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.mix(0.6).stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::MiddleRight)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))?;
    Ok(())
}
