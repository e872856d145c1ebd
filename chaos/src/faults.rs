//! The seeded fault schedule and the task that applies it to the 3-node cluster.
//!
//! One fault at a time: a broker is SIGKILLed and restarted after a hold, or SIGSTOPped and
//! continued after a hold; then the injector waits until every replica of the scenario's topics
//! is back in sync before the next gap, so that each fault hits a whole cluster (a second fault
//! while one replica lags would only stall the workload below `min.insync.replicas`).

use std::time::{Duration, Instant};

use kafka_wire::client::{Admin, ClientConfig};
use kafka_wire_tests::{
    kafka_node_kill, kafka_node_pause, kafka_node_resume, kafka_node_running, kafka_node_start, RestartOnDrop,
};

use crate::{Rng, Stop};

/// How long the injector waits for the replicas to be in sync again after a fault.
const IN_SYNC_BOUND: Duration = Duration::from_secs(300);

/// Faults injected in a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// SIGKILLs.
    pub kills: u64,
    /// SIGSTOPs (each continued with SIGCONT).
    pub stops: u64,
    /// Restarts of killed brokers.
    pub restarts: u64,
}

/// What is done to a broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL, then restart with its data after the hold.
    Kill,
    /// SIGSTOP, then SIGCONT after the hold (a hung broker: sockets open, no answers).
    Stop,
}

/// Which broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The one leading this partition of the scenario's first topic when the fault starts.
    LeaderOf(i32),
    /// Node 1..=3.
    Node(u8),
}

/// One fault of the schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    /// Wait before the fault (after the previous one has healed).
    pub gap: Duration,
    /// The fault.
    pub fault: Fault,
    /// Its target.
    pub target: Target,
    /// How long the broker stays dead or stopped.
    pub hold: Duration,
}

/// Kinds of schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Kills and stops, chosen at random, of the leader of a random partition of `partitions`.
    Leaders {
        /// Partitions of the scenario's first topic.
        partitions: i32,
    },
    /// Rolling restarts: nodes 1, 2, 3, 1, ... killed and restarted in turn, with the odd stop.
    Rolling,
}

/// An endless seeded sequence of [`Step`]s: the same seed and plan give the same steps.
#[derive(Clone, Debug)]
pub struct Schedule {
    rng: Rng,
    plan: Plan,
    step: u64,
}

impl Schedule {
    /// The schedule of `plan` from `seed`.
    pub fn new(seed: u64, plan: Plan) -> Self {
        Self { rng: Rng::new(seed ^ 0x00FA_0175), plan, step: 0 }
    }
}

impl Iterator for Schedule {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        let rng = &mut self.rng;
        let gap = rng.duration(Duration::from_millis(1000), Duration::from_millis(5000));
        let fault = if rng.below(2) == 0 { Fault::Kill } else { Fault::Stop };
        let (fault, target) = match self.plan {
            Plan::Leaders { partitions } => (fault, Target::LeaderOf(rng.below(partitions as u64) as i32)),
            // A rolling restart is mostly kills; one step in four is a stop.
            Plan::Rolling => {
                let fault = if rng.below(4) == 0 { Fault::Stop } else { Fault::Kill };
                (fault, Target::Node((self.step % 3) as u8 + 1))
            }
        };
        // Stops from under the broker session timeout (3 s: the broker is not fenced) to well
        // over it (fenced, its leaderships move); kills from an instant to a few seconds.
        let hold = match fault {
            Fault::Kill => rng.duration(Duration::from_millis(200), Duration::from_millis(5000)),
            Fault::Stop => rng.duration(Duration::from_millis(1000), Duration::from_millis(8000)),
        };
        self.step += 1;
        Some(Step { gap, fault, target, hold })
    }
}

/// Applies `schedule` until `stop` is set (the fault under way is always healed first), then
/// returns what it did. `topics`' replicas are waited for in sync after each fault; the first
/// topic's leaders resolve [`Target::LeaderOf`].
pub async fn inject(
    bootstrap: String,
    topics: Vec<String>,
    schedule: Schedule,
    stop: Stop,
) -> Result<FaultCounts, String> {
    let admin = Admin::connect(ClientConfig::new(&bootstrap)).await.map_err(|e| format!("admin: {e}"))?;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut counts = FaultCounts::default();
    for (i, step) in schedule.enumerate() {
        stop.sleep(step.gap).await;
        if stop.is_set() {
            break;
        }
        let node = match step.target {
            Target::Node(n) => n,
            Target::LeaderOf(p) => {
                let described = admin.describe_topics(&topic_refs[..1]).await.map_err(|e| format!("describe: {e}"))?;
                let leader = described[0].partitions.iter().find(|m| m.partition == p).and_then(|m| m.leader);
                match leader.and_then(|l| u8::try_from(l).ok()) {
                    Some(n) => n,
                    None => {
                        eprintln!("[chaos] step {i}: partition {p} has no leader now; skipped");
                        continue;
                    }
                }
            }
        };
        eprintln!(
            "[chaos] t={:.1}s step {i}: {:?} node {node} ({:?}) for {:.1} s",
            started.elapsed().as_secs_f64(),
            step.fault,
            step.target,
            step.hold.as_secs_f64()
        );
        match step.fault {
            Fault::Kill => {
                tokio::task::spawn_blocking(move || kafka_node_kill(node)).await.map_err(|e| e.to_string())?;
                // Restarts the node even if this task is dropped or panics from here on.
                let restart = RestartOnDrop(node);
                counts.kills += 1;
                tokio::time::sleep(step.hold).await;
                start(node).await?;
                counts.restarts += 1;
                drop(restart);
            }
            Fault::Stop => {
                let paused =
                    tokio::task::spawn_blocking(move || kafka_node_pause(node)).await.map_err(|e| e.to_string())?;
                counts.stops += 1;
                tokio::time::sleep(step.hold).await;
                tokio::task::spawn_blocking(move || kafka_node_resume(node)).await.map_err(|e| e.to_string())?;
                drop(paused);
            }
        }
        crate::wait_in_sync(&bootstrap, &topic_refs, IN_SYNC_BOUND).await?;
        eprintln!("[chaos] t={:.1}s step {i}: healed, all replicas in sync", started.elapsed().as_secs_f64());
    }
    admin.close().await;
    Ok(counts)
}

/// Restarts node `n`. On a loaded machine a node may take longer than the harness's 90 s to
/// serve again (a KRaft election dragging on); that is not the scenario's failure: if its
/// process runs, the caller's wait for the replicas in sync covers it, else it is started once
/// more.
async fn start(n: u8) -> Result<(), String> {
    for attempt in 0..2 {
        let started = tokio::task::spawn_blocking(move || kafka_node_start(n)).await;
        match started {
            Ok(()) => return Ok(()),
            Err(e) if kafka_node_running(n) => {
                eprintln!("[chaos] node {n} is slow to serve again ({e}); waiting for its replicas instead");
                return Ok(());
            }
            Err(e) if attempt == 0 => eprintln!("[chaos] node {n} did not start ({e}); starting it again"),
            Err(e) => return Err(format!("node {n} did not start twice: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_schedule() {
        let a: Vec<Step> = Schedule::new(7, Plan::Leaders { partitions: 6 }).take(50).collect();
        let b: Vec<Step> = Schedule::new(7, Plan::Leaders { partitions: 6 }).take(50).collect();
        let c: Vec<Step> = Schedule::new(8, Plan::Leaders { partitions: 6 }).take(50).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().any(|s| s.fault == Fault::Kill) && a.iter().any(|s| s.fault == Fault::Stop));
    }

    #[test]
    fn rolling_restarts_visit_every_node_in_turn() {
        let nodes: Vec<Target> = Schedule::new(1, Plan::Rolling).take(6).map(|s| s.target).collect();
        let want: Vec<Target> = [1, 2, 3, 1, 2, 3].into_iter().map(Target::Node).collect();
        assert_eq!(nodes, want);
    }
}
