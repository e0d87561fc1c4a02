//! Lamina's side of the brokers a self-hosted user already runs. Today: appending invocation
//! records to Redis streams (an asynchronous invocation destination). Event source pollers,
//! one module per broker, join here.
//!
//! Architecture invariant: knows nothing of HTTP framing; reaches the engine only through the
//! ports of `lamina-core`.
#![forbid(unsafe_code)]

mod redis_stream;

pub use redis_stream::RedisStreams;

/// Every broker Lamina delivers to, behind the one [`lamina_core::invoke::Publish`] port.
#[derive(Default)]
pub struct Brokers {
    redis: RedisStreams,
}

#[async_trait::async_trait]
impl lamina_core::invoke::Publish for Brokers {
    async fn redis_stream(
        &self,
        server: &str,
        key: &str,
        record: &[u8],
        fields: &[(&str, &str)],
    ) -> Result<(), String> {
        self.redis.append(server, key, record, fields).await
    }
}
