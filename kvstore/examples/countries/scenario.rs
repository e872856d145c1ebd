//! The article's in-memory KV store example (pattern 3): Business Manager keeps the supported
//! countries in a `countries` store; Bookings watches it and adds a time zone to its
//! `time-zones` store for every country that has none; Events reads `time-zones` from memory and
//! watches it. Adding "South Sudan" in Business Manager ends with its time zone in Events' store.
//!
//! Each service holds its own stores (as separate processes would), on the same topics.

use std::time::Duration;

use kvstore::{Error, KvConfig, KvStore, WatchError};

/// Business Manager's store: country code → name.
pub type Countries = KvStore<String, String>;
/// Bookings' store, read by Events: country code → IANA time zone.
pub type TimeZones = KvStore<String, String>;

/// How long the scenario waits for a service to react.
const REACTION: Duration = Duration::from_secs(30);

/// The time zone Bookings gives a country.
fn time_zone_of(code: &str) -> &'static str {
    match code {
        "US" => "America/New_York",
        "FR" => "Europe/Paris",
        "IL" => "Asia/Jerusalem",
        "SS" => "Africa/Juba",
        _ => "UTC",
    }
}

/// Bookings: for every country of the `countries` store, the present ones and those added
/// later, writes a time zone to the `time-zones` store unless it has one. Runs until the
/// countries store stops.
async fn bookings(countries: Countries, time_zones: TimeZones) -> kvstore::Result<()> {
    loop {
        // A snapshot and the changes after it: no country is missed in between. A watcher that
        // lagged starts over from a new snapshot (adding a time zone is idempotent).
        let (present, mut changes) = countries.snapshot_and_watch()?;
        for (code, _) in present {
            add_time_zone(&time_zones, &code).await?;
        }
        loop {
            match changes.recv().await {
                Ok(change) if change.new.is_some() => add_time_zone(&time_zones, &change.key).await?,
                Ok(_) => {}
                Err(WatchError::Lagged(_)) => break,
                Err(WatchError::Closed) => return Ok(()),
            }
        }
    }
}

async fn add_time_zone(time_zones: &TimeZones, code: &str) -> kvstore::Result<()> {
    if !time_zones.contains(code)? {
        time_zones.put(&code.to_owned(), &time_zone_of(code).to_owned()).await?;
    }
    Ok(())
}

/// What Events saw.
#[derive(Debug)]
pub struct Outcome {
    /// South Sudan's time zone in Events' store, once it arrived.
    pub south_sudan: String,
    /// Events' whole store at the end.
    pub events_time_zones: Vec<(String, String)>,
    /// Business Manager's countries at the end.
    pub countries: Vec<(String, String)>,
}

/// Runs the three services on the topics `countries` and `time_zones` (created compacted if
/// missing) and adds South Sudan.
pub async fn run(bootstrap: &str, countries_topic: &str, time_zones_topic: &str) -> kvstore::Result<Outcome> {
    // Business Manager.
    let manager: Countries = KvStore::open(KvConfig::new(bootstrap, countries_topic)).await?;
    for (code, name) in [("US", "United States"), ("FR", "France"), ("IL", "Israel")] {
        if !manager.contains(code)? {
            manager.put(&code.to_owned(), &name.to_owned()).await?;
        }
    }

    // Bookings, with its own view of the countries.
    let bookings_countries: Countries = KvStore::open(KvConfig::new(bootstrap, countries_topic)).await?;
    let bookings_time_zones: TimeZones = KvStore::open(KvConfig::new(bootstrap, time_zones_topic)).await?;
    let bookings = tokio::spawn(bookings(bookings_countries, bookings_time_zones));

    // Events.
    let events: TimeZones = KvStore::open(KvConfig::new(bootstrap, time_zones_topic)).await?;
    let mut south_sudan = events.watch_key("SS".to_owned());

    manager.put(&"SS".to_owned(), &"South Sudan".to_owned()).await?;

    // Already there from an earlier run, or on its way.
    let arrived = async {
        if let Some(tz) = events.get("SS")? {
            return Ok(tz);
        }
        loop {
            match south_sudan.recv().await {
                Ok(change) => {
                    if let Some(tz) = change.new {
                        return Ok(tz);
                    }
                }
                // Missed changes: read the store again.
                Err(WatchError::Lagged(_)) => {
                    if let Some(tz) = events.get("SS")? {
                        return Ok(tz);
                    }
                }
                Err(WatchError::Closed) => {
                    return Err(Error::Stopped { topic: time_zones_topic.into(), reason: "closed".into() })
                }
            }
        }
    };
    let waited = tokio::time::timeout(REACTION, arrived).await;
    bookings.abort();
    let south_sudan = match waited {
        Ok(result) => result?,
        Err(_) => {
            return Err(Error::Timeout { what: "South Sudan's time zone in Events' store".into(), after: REACTION })
        }
    };
    Ok(Outcome { south_sudan, events_time_zones: events.iter()?, countries: manager.iter()? })
}
