//! The topology: every name the service declares in RabbitMQ derives from `broker.exchange`, and
//! every binding of its own queues from the interest their consumer declared
//! ([`crate::feed::interest`]).
//!
//! Publishes are `mandatory`, so that an event no queue takes comes back and the relay declares
//! the topology again (bindings removed by hand). The work queues take only what their consumers
//! want, so the types nobody here wants are bound to a queue of their own that keeps nothing
//! (`x-max-length` 0): they are routed, and a binding removed by hand still shows.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::feed::interest::Interest;

/// Every name the service declares, derived from the exchange's name, and the bindings of its
/// work queues.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The durable topic exchange events are published to.
    pub exchange: String,
    /// Where the work queues dead-letter (direct, routed by the queue's name).
    pub dead_letter_exchange: String,
    /// The legacy-sync handler's quorum queue.
    pub legacy_sync: String,
    /// The push handler's quorum queue.
    pub push: String,
    /// Bound to the event types no work queue wants; keeps nothing.
    pub unclaimed: String,
    /// The work queues to declare, each with what it is bound to.
    work: Vec<(String, Interest)>,
}

impl Topology {
    /// The names for `exchange`, with no work queue to declare yet ([`Topology::bind`]).
    pub fn new(exchange: &str) -> Self {
        Self {
            exchange: exchange.to_owned(),
            dead_letter_exchange: format!("{exchange}.dead-letter"),
            legacy_sync: format!("{exchange}.legacy-sync"),
            push: format!("{exchange}.push"),
            unclaimed: format!("{exchange}.unclaimed"),
            work: vec![],
        }
    }

    /// Declares work queue `queue`, bound to the events of `interest`.
    pub fn bind(mut self, queue: &str, interest: Interest) -> Self {
        self.work.push((queue.to_owned(), interest));
        self
    }

    /// The dead-letter queue of work queue `queue`.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dead")
    }

    /// The routing key of an event: `approval.<system>.<event_type>`.
    pub fn routing_key(system: &str, event_type: &str) -> String {
        format!("approval.{system}.{event_type}")
    }

    /// The binding keys that route the events of `interest`, whatever their system.
    pub fn keys(interest: &Interest) -> Vec<String> {
        if interest.is_all() {
            return vec!["approval.#".to_owned()];
        }
        interest
            .types()
            .iter()
            .map(|t| format!("approval.*.{t}"))
            .collect()
    }

    /// The binding keys of work queue `queue` (none if it is not one of this topology's).
    pub fn keys_of(&self, queue: &str) -> Vec<String> {
        self.work
            .iter()
            .filter(|(name, _)| name == queue)
            .flat_map(|(_, interest)| Self::keys(interest))
            .collect()
    }

    /// The binding keys of the queue that takes what no work queue wants.
    pub fn unclaimed_keys(&self) -> Vec<String> {
        let interests: Vec<Interest> = self.work.iter().map(|(_, i)| *i).collect();
        Interest::unclaimed(&interests)
            .iter()
            .map(|t| format!("approval.*.{t}"))
            .collect()
    }

    /// Declares the exchanges, the work queues (quorum, with a delivery limit and
    /// dead-lettering), their dead-letter queues, the queue of the unclaimed types and the
    /// bindings. Idempotent.
    pub async fn declare(&self, channel: &Channel, delivery_limit: u32) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_letter_exchange.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        for (queue, interest) in &self.work {
            let dead = Self::dead_letter_queue(queue);
            channel
                .queue_declare(dead.as_str().into(), queue_options(), quorum(None))
                .await?;
            channel
                .queue_bind(
                    dead.as_str().into(),
                    self.dead_letter_exchange.as_str().into(),
                    queue.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let mut args = quorum(Some(delivery_limit));
            args.insert(
                ShortString::from("x-dead-letter-exchange"),
                AMQPValue::LongString(LongString::from(self.dead_letter_exchange.as_str())),
            );
            args.insert(
                ShortString::from("x-dead-letter-routing-key"),
                AMQPValue::LongString(LongString::from(queue.as_str())),
            );
            channel
                .queue_declare(queue.as_str().into(), queue_options(), args)
                .await?;
            self.bind_keys(channel, queue, &Self::keys(interest))
                .await?;
        }
        let unclaimed = self.unclaimed_keys();
        if !self.work.is_empty() && !unclaimed.is_empty() {
            let mut args = FieldTable::default();
            args.insert(ShortString::from("x-max-length"), AMQPValue::LongInt(0));
            channel
                .queue_declare(self.unclaimed.as_str().into(), queue_options(), args)
                .await?;
            self.bind_keys(channel, &self.unclaimed, &unclaimed).await?;
        }
        Ok(())
    }

    async fn bind_keys(
        &self,
        channel: &Channel,
        queue: &str,
        keys: &[String],
    ) -> lapin::Result<()> {
        for key in keys {
            channel
                .queue_bind(
                    queue.into(),
                    self.exchange.as_str().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Deletes every queue and exchange of this topology, with whatever they hold: for tests and
    /// benchmarks that declared their own, never for a ledger in use.
    pub async fn delete(&self, channel: &Channel) -> lapin::Result<()> {
        for queue in [&self.legacy_sync, &self.push] {
            for name in [queue.clone(), Self::dead_letter_queue(queue)] {
                channel
                    .queue_delete(name.as_str().into(), QueueDeleteOptions::default())
                    .await?;
            }
        }
        channel
            .queue_delete(
                self.unclaimed.as_str().into(),
                QueueDeleteOptions::default(),
            )
            .await?;
        for exchange in [&self.exchange, &self.dead_letter_exchange] {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

fn queue_options() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn quorum(delivery_limit: Option<u32>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        ShortString::from("x-queue-type"),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    if let Some(limit) = delivery_limit {
        args.insert(
            ShortString::from("x-delivery-limit"),
            AMQPValue::LongInt(i32::try_from(limit).unwrap_or(i32::MAX)),
        );
    }
    args
}

#[cfg(test)]
mod tests {
    use super::Topology;
    use crate::feed::interest::Interest;

    #[test]
    fn every_name_derives_from_the_exchange() {
        let t = Topology::new("approval.events");
        assert_eq!(t.legacy_sync, "approval.events.legacy-sync");
        assert_eq!(t.push, "approval.events.push");
        assert_eq!(t.unclaimed, "approval.events.unclaimed");
        assert_eq!(t.dead_letter_exchange, "approval.events.dead-letter");
        assert_eq!(
            Topology::dead_letter_queue(&t.push),
            "approval.events.push.dead"
        );
        assert_eq!(
            Topology::routing_key("erp", "RequestApproved"),
            "approval.erp.RequestApproved"
        );
    }

    #[test]
    fn the_bindings_follow_the_interests_and_the_rest_goes_to_the_unclaimed_queue() {
        let t = Topology::new("x");
        let queue = t.push.clone();
        let t = t.bind(&queue, Interest::only(approval_aggregates::is_final_type));
        assert_eq!(
            t.keys_of(&queue).len(),
            approval_aggregates::FINAL_TYPES.len()
        );
        assert!(t
            .keys_of(&queue)
            .contains(&"approval.*.RequestApproved".to_owned()));
        let rest = t.unclaimed_keys();
        assert!(rest.contains(&"approval.*.RequestSubmitted".to_owned()));
        assert!(!rest.contains(&"approval.*.RequestApproved".to_owned()));
        assert_eq!(Topology::keys(&Interest::ALL), ["approval.#"]);
    }
}
