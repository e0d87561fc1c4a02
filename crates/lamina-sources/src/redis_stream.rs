//! Redis streams: `XADD <key> * record <json> <field> <value>…` on one multiplexed connection
//! per server, opened on first use and again after a failure.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

/// How long connecting or appending may take before the attempt counts as failed.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
pub struct RedisStreams {
    connections: Mutex<HashMap<String, MultiplexedConnection>>,
}

impl RedisStreams {
    async fn connection(&self, server: &str) -> Result<MultiplexedConnection, String> {
        let mut connections = self.connections.lock().await;
        if let Some(connection) = connections.get(server) {
            return Ok(connection.clone());
        }
        let client = redis::Client::open(server).map_err(|e| format!("{server}: {e}"))?;
        let connection = tokio::time::timeout(TIMEOUT, client.get_multiplexed_async_connection())
            .await
            .map_err(|_| format!("{server}: connecting timed out"))?
            .map_err(|e| format!("{server}: {e}"))?;
        connections.insert(server.to_owned(), connection.clone());
        Ok(connection)
    }

    /// Appends one entry to the stream `key`: the record under `record`, then `fields`.
    pub async fn append(
        &self,
        server: &str,
        key: &str,
        record: &[u8],
        fields: &[(&str, &str)],
    ) -> Result<(), String> {
        let mut connection = self.connection(server).await?;
        let mut command = redis::cmd("XADD");
        command.arg(key).arg("*").arg("record").arg(record);
        for (name, value) in fields {
            command.arg(*name).arg(*value);
        }
        let appended =
            tokio::time::timeout(TIMEOUT, command.query_async::<String>(&mut connection))
                .await
                .map_err(|_| format!("{server}: XADD timed out"))
                .and_then(|r| r.map_err(|e| format!("{server}: {e}")));
        if appended.is_err() {
            // Connect afresh next time: the server may have restarted.
            self.connections.lock().await.remove(server);
        }
        appended.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_server_is_an_error_not_a_hang() {
        let streams = RedisStreams::default();
        // Port 1 on loopback: nothing listens there.
        let err = streams
            .append("redis://127.0.0.1:1", "k", b"{}", &[])
            .await
            .unwrap_err();
        assert!(err.contains("127.0.0.1:1"), "{err}");
        let err = streams
            .append("not a url", "k", b"{}", &[])
            .await
            .unwrap_err();
        assert!(!err.is_empty());
    }
}
