//! A closure around one transaction, for one-off atomic writes to several topics.

use std::future::Future;

use kafka_wire::client::{Error, Producer, ProducerRecord, Result};

/// The open transaction inside [`transact`]: what is sent through it is committed or aborted
/// together. It can only send; [`transact`] ends the transaction.
#[derive(Clone)]
pub struct Tx(Producer);

impl Tx {
    /// Sends a record as part of the transaction. Its delivery is not reported one by one: the
    /// commit waits for every record and fails (so the transaction is aborted) if any failed.
    pub async fn send(&self, record: ProducerRecord) -> Result<()> {
        // Dropping the delivery future is safe: the producer notes a failed record of the open
        // transaction itself and refuses to commit it.
        drop(self.0.send(record).await?);
        Ok(())
    }
}

impl std::fmt::Debug for Tx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("producer_id", &self.0.producer_id()).finish()
    }
}

/// Runs `f` in a transaction of `producer` (which must have had `init_transactions`, see
/// [`transactional_producer`](crate::transactional_producer)): begins, runs the closure, which
/// sends through its [`Tx`], then commits if it returned `Ok` and aborts if it returned `Err`.
/// Returns the closure's value.
///
/// ```no_run
/// # async fn demo(producer: &kafka_wire::client::Producer) -> kafka_wire::client::Result<()> {
/// use kafka_wire::client::ProducerRecord;
/// let order = txn::transact(producer, |tx| async move {
///     tx.send(ProducerRecord::new("orders", "order 42").key("42")).await?;
///     tx.send(ProducerRecord::new("audit", "order 42 placed")).await?;
///     Ok::<_, kafka_wire::client::Error>(42)
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// On `Err`, nothing the closure sent is visible to read_committed consumers: the closure's
/// error after it failed, or the commit's error after the commit failed (except
/// [`Error::Fenced`], where the newer instance aborts the transaction). If the abort itself
/// fails, that error is returned instead (the original one is logged): the producer then needs
/// attention (it was fenced, or the coordinator could not be reached).
///
/// Dropping the returned future before it completes leaves the transaction open; abort it
/// with `abort_transaction` (or drop the producer: the coordinator aborts it after
/// `transaction.timeout.ms`, or when a new instance calls `init_transactions`).
pub async fn transact<T, E, F, Fut>(producer: &Producer, f: F) -> std::result::Result<T, E>
where
    F: FnOnce(Tx) -> Fut,
    Fut: Future<Output = std::result::Result<T, E>>,
    E: From<Error> + std::fmt::Display,
{
    producer.begin_transaction()?;
    let value = match f(Tx(producer.clone())).await {
        Ok(value) => value,
        Err(e) => return Err(abort(producer, e).await),
    };
    match producer.commit_transaction().await {
        Ok(()) => Ok(value),
        Err(e @ Error::Fenced { .. }) => Err(e.into()),
        Err(e) => Err(abort(producer, E::from(e)).await),
    }
}

/// Aborts after `cause`, returning `cause`, or the abort's error if the abort failed.
async fn abort<E: From<Error> + std::fmt::Display>(producer: &Producer, cause: E) -> E {
    match producer.abort_transaction().await {
        Ok(()) => cause,
        Err(e) => {
            tracing::warn!(cause = %cause, error = %e, "aborting the transaction failed");
            e.into()
        }
    }
}
