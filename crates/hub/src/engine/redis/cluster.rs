//! Redis Cluster: a topic's slot, and the masters that serve the slots.

use redis::{Client, IntoConnectionInfo, ProtocolVersion, Value};

use super::{IntoRouting, RedisFailure, Started};

/// Slots of a Redis Cluster.
const SLOTS: usize = 16384;

/// The Redis Cluster slot of a topic's keys and channel (`fdx:{TOPIC}...`: the hash tag is
/// the topic name): CRC16 (XMODEM) of the name, modulo 16384.
pub(crate) fn slot(name: &[u8]) -> u16 {
    let crc = crc16::State::<crc16::XMODEM>::calculate(name);
    crc % SLOTS as u16
}

/// Connects to `seed`, reads `CLUSTER SLOTS` and makes one shard per master, with the
/// slot table.
pub(crate) async fn discover(seed: &str) -> Result<Started, RedisFailure> {
    let info = seed
        .into_connection_info()
        .map_err(|error| RedisFailure::Config(format!("{seed}: {error}")))?;
    let client = Client::open(info.clone())
        .map_err(|error| RedisFailure::Config(format!("{seed}: {error}")))?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    let answer: Value = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut connection)
        .await?;
    let ranges =
        parse_slots(&answer).ok_or_else(|| RedisFailure::Answer("CLUSTER SLOTS".into()))?;
    if ranges.is_empty() {
        return Err(RedisFailure::Config(format!(
            "{seed}: the cluster has no slots assigned"
        )));
    }
    let mut masters: Vec<(String, u16)> = Vec::new();
    let mut slots = vec![0u16; SLOTS];
    for (start, end, host, port) in ranges {
        let index = match masters.iter().position(|m| *m == (host.clone(), port)) {
            Some(index) => index,
            None => {
                masters.push((host.clone(), port));
                masters.len() - 1
            }
        };
        if let Some(range) = slots.get_mut(start..=end.min(SLOTS - 1)) {
            range.fill(index as u16);
        }
    }
    let mut shards = Vec::new();
    for (host, port) in masters {
        let mut master = info.clone();
        master.addr = redis::ConnectionAddr::Tcp(host.clone(), port);
        master.redis.protocol = ProtocolVersion::RESP3;
        let client = Client::open(master)
            .map_err(|error| RedisFailure::Config(format!("{host}:{port}: {error}")))?;
        shards.push((format!("{host}:{port}"), client));
    }
    Ok(shards.into_routing(Some(slots)))
}

fn int(value: &Value) -> Option<i64> {
    match value {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replicas...], ...]` as
/// `(start, end, host, port)` of each range's master.
fn parse_slots(answer: &Value) -> Option<Vec<(usize, usize, String, u16)>> {
    let Value::Array(ranges) = answer else {
        return None;
    };
    let mut out = Vec::new();
    for range in ranges {
        let Value::Array(fields) = range else {
            return None;
        };
        let start = usize::try_from(int(fields.first()?)?).ok()?;
        let end = usize::try_from(int(fields.get(1)?)?).ok()?;
        let Value::Array(master) = fields.get(2)? else {
            return None;
        };
        let host = text(master.first()?)?;
        let port = u16::try_from(int(master.get(1)?)?).ok()?;
        out.push((start, end, host, port));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_as_redis_computes_them() {
        // Values from `redis-cli CLUSTER KEYSLOT`.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"123456789"), 0x31C3, "the CRC16 check value");
    }

    #[test]
    fn cluster_slots_answer() {
        let bulk = |s: &str| Value::BulkString(s.as_bytes().to_vec());
        let answer = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(5460),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7000), bulk("id1")]),
            ]),
            Value::Array(vec![
                Value::Int(5461),
                Value::Int(16383),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7001), bulk("id2")]),
                Value::Array(vec![bulk("127.0.0.1"), Value::Int(7002), bulk("id3")]),
            ]),
        ]);
        let ranges = parse_slots(&answer).unwrap_or_default();
        assert_eq!(
            ranges,
            [
                (0, 5460, "127.0.0.1".to_owned(), 7000),
                (5461, 16383, "127.0.0.1".to_owned(), 7001)
            ]
        );
        assert!(parse_slots(&Value::Int(1)).is_none());
    }
}
