//! The atomic store's processor on the `txn` crate's exactly-once [`txn::Processor`]: every use
//! of `txn` is here.

use std::time::Duration;

use kafka_wire::client::{Admin, OffsetReset};
use kafka_wire::ClientConfig;

use crate::atomic::{AtomicProcessor, Role};
use crate::atomic_state::{Engine, Loader};
use crate::error::{Error, Result};

/// A latching stop signal for [`AtomicProcessor::run`].
#[derive(Clone, Debug, Default)]
pub struct Stop(txn::Shutdown);

impl Stop {
    /// A signal not triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the processor to finish the transaction in progress, leave the group and return.
    pub fn trigger(&self) {
        self.0.trigger();
    }
}

impl AtomicProcessor {
    /// Checks (or creates) the topics, connects (fencing the previous instance of the
    /// `transactional_id` and aborting what it left open), and applies commands until `stop`
    /// is triggered or a failure that retrying cannot fix (fenced by a newer instance, a
    /// consumer error). The commands and store topics must have the same partition count
    /// ([`Error::NotCoPartitioned`]), and the store topic must be compacted.
    ///
    /// Dropping the future (a crash) is safe: the open transaction is aborted by the next
    /// instance with the same `transactional_id` (or the coordinator's transaction timeout),
    /// and the commands it held are applied again by the partitions' next owner.
    pub async fn run(self, stop: &Stop) -> Result<()> {
        let config = self.config;
        let admin = Admin::connect(ClientConfig::new(&config.bootstrap)).await?;
        let counts = config.prepare(&admin, &[Role::Commands, Role::Store, Role::Replies]).await;
        admin.close().await;
        let counts = counts?;
        if counts[0] != counts[1] {
            return Err(Error::NotCoPartitioned {
                commands: config.commands.clone(),
                commands_partitions: counts[0],
                store: config.store.clone(),
                store_partitions: counts[1],
            });
        }
        let consumer = config.consumer_config()?;
        let loader = Loader::start(
            config.bootstrap.clone(),
            consumer.clone().enable_auto_commit(false),
            config.store.clone(),
            config.load_timeout,
        )
        .map_err(|e| Error::Stopped {
            topic: config.store.clone(),
            reason: format!("starting the loader thread: {e}"),
        })?;
        let mut engine =
            Engine::new(config.store.clone(), config.replies.clone(), self.functions, self.callbacks, loader);

        let mut processor_config = txn::ProcessorConfig::new(
            &config.bootstrap,
            &self.group_id,
            &self.transactional_id,
            [config.commands.as_str()],
        );
        processor_config.consumer = consumer.group_id(&self.group_id).auto_offset_reset(OffsetReset::Earliest);
        processor_config.producer = config.producer_config()?.transactional_id(&self.transactional_id);
        processor_config.poll_timeout = Duration::from_millis(100);
        let processor = txn::Processor::new(processor_config).await?;
        let handler = move |batch: &[kafka_wire::ConsumerRecord], out: &mut Vec<kafka_wire::ProducerRecord>| {
            if engine.handle(batch, out) {
                txn::Decision::Commit
            } else {
                txn::Decision::Abort
            }
        };
        processor.run(handler, &stop.0).await?;
        Ok(())
    }
}
