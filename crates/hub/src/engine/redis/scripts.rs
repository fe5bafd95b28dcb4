//! The Lua scripts the Redis engine runs: each is one atomic step on one topic's keys, which
//! share the hash tag `{TOPIC}` (one Redis Cluster slot), and its channel `fdx:{TOPIC}`
//! (sharded pub/sub, the same slot).
//!
//! Keys of topic `T`: `fdx:{T}:offset` (the latest offset), `fdx:{T}:epoch`,
//! `fdx:{T}:history` (a stream: entry ID `OFFSET-0`, fields `t` (milliseconds, Redis's
//! clock) and `d` (the data)), `fdx:{T}:presence` (a hash: client id to
//! `{"client":..,"user":..}`) and `fdx:{T}:presence-expiry` (a sorted set: client id by
//! expiry time). Channel messages: `OFFSET EPOCH DATA` for a message, `J JSON` and `L JSON`
//! for presence.

use redis::Script;

use crate::topic::Topic;

/// The keys and channel of one topic.
#[derive(Debug)]
pub(crate) struct TopicKeys {
    pub offset: String,
    pub epoch: String,
    pub history: String,
    pub presence: String,
    pub presence_expiry: String,
    pub channel: String,
}

impl TopicKeys {
    pub(crate) fn new(topic: &Topic) -> TopicKeys {
        TopicKeys {
            offset: format!("fdx:{{{topic}}}:offset"),
            epoch: format!("fdx:{{{topic}}}:epoch"),
            history: format!("fdx:{{{topic}}}:history"),
            presence: format!("fdx:{{{topic}}}:presence"),
            presence_expiry: format!("fdx:{{{topic}}}:presence-expiry"),
            channel: channel(topic),
        }
    }
}

/// The topic's channel: `fdx:{TOPIC}`.
pub(crate) fn channel(topic: &Topic) -> String {
    format!("fdx:{{{topic}}}")
}

/// The topic of a channel name.
pub(crate) fn topic_of_channel(channel: &[u8]) -> Option<Topic> {
    let name = std::str::from_utf8(channel).ok()?;
    let inner = name.strip_prefix("fdx:{")?.strip_suffix('}')?;
    Topic::new(inner).ok()
}

/// Shared by the scripts: milliseconds of Redis's clock, and the topic's epoch (made from
/// Redis's clock and the caller's random suffix when the topic has none, which also resets
/// its offset and history).
const PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function epoch_of(suffix, meta_ttl)
  local epoch = redis.call('GET', KEYS[2])
  if not epoch then
    local t = redis.call('TIME')
    epoch = string.format('%08x%05x', tonumber(t[1]), tonumber(t[2])) .. suffix
    redis.call('SET', KEYS[2], epoch, 'PX', meta_ttl)
    redis.call('SET', KEYS[1], 0, 'PX', meta_ttl)
    redis.call('DEL', KEYS[3])
  end
  return epoch
end
";

/// KEYS: offset, epoch, history. ARGV: channel, data, epoch suffix, history size, history
/// TTL (ms), meta TTL (ms). Returns `{offset, epoch}`.
const PUBLISH: &str = r"
local epoch = epoch_of(ARGV[3], ARGV[6])
local offset = redis.call('INCR', KEYS[1])
if tonumber(ARGV[4]) > 0 then
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], offset .. '-0', 't', now_ms(), 'd', ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SPUBLISH', ARGV[1], offset .. ' ' .. epoch .. ' ' .. ARGV[2])
return {offset, epoch}
";

/// KEYS: offset, epoch, history. ARGV: after, epoch ('' for none), epoch suffix, history
/// TTL (ms), meta TTL (ms), history size. Returns `{epoch, latest, after, OFFSET, DATA,
/// ...}`: the messages after `after` (after 0 when the epoch given is not the topic's),
/// among the last `history size`, younger than the TTL. (The stream is trimmed
/// approximately, which is cheaper; the size is enforced here.)
const READ: &str = r"
local epoch = epoch_of(ARGV[3], ARGV[5])
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
local after = tonumber(ARGV[1])
if ARGV[2] ~= '' and ARGV[2] ~= epoch then after = 0 end
if after > latest then after = latest end
local out = {epoch, latest, after}
if after < latest then
  local cutoff = now_ms() - tonumber(ARGV[4])
  local young = false
  local start = math.max(after, latest - tonumber(ARGV[6]))
  local entries = redis.call('XRANGE', KEYS[3], string.format('%d-1', start), '+')
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    local at, data
    for i = 1, #fields, 2 do
      if fields[i] == 't' then at = tonumber(fields[i + 1]) end
      if fields[i] == 'd' then data = fields[i + 1] end
    end
    if at and at > cutoff then young = true end
    if young and data then
      table.insert(out, string.match(entry[1], '^%d+'))
      table.insert(out, data)
    end
  end
end
return out
";

/// Removes the expired entries of a topic's presence (KEYS: presence, presence-expiry),
/// telling the channel `ARGV[1]` with `L JSON` for each.
const EXPIRE_PRESENCE: &str = r"
local function expire_presence(channel, now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
  for _, id in ipairs(expired) do
    local json = redis.call('HGET', KEYS[1], id)
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    if json then redis.call('SPUBLISH', channel, 'L ' .. json) end
  end
end
";

/// KEYS: presence, presence-expiry. ARGV: channel, TTL (ms), then pairs of client id and
/// JSON. Expires the entries of dead nodes, then adds or refreshes the given clients
/// (`J JSON` on the channel for each new one).
const REFRESH_PRESENCE: &str = r"
local now = now_ms()
local ttl = tonumber(ARGV[2])
expire_presence(ARGV[1], now)
for i = 3, #ARGV, 2 do
  if redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
    redis.call('SPUBLISH', ARGV[1], 'J ' .. ARGV[i + 1])
  end
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[i])
end
if #ARGV > 2 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
";

/// KEYS: presence, presence-expiry. ARGV: channel, client id. `L JSON` when it was there.
const LEAVE_PRESENCE: &str = r"
local json = redis.call('HGET', KEYS[1], ARGV[2])
if json then
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
  redis.call('SPUBLISH', ARGV[1], 'L ' .. json)
end
return 1
";

/// KEYS: presence, presence-expiry. ARGV: channel. Expires dead entries, returns the rest.
const LIST_PRESENCE: &str = r"
expire_presence(ARGV[1], now_ms())
return redis.call('HVALS', KEYS[1])
";

/// The channel of server API commands for every node (`#` cannot be part of a topic name).
pub(crate) const CONTROL_CHANNEL: &str = "fdx:{#control}";
/// The hash of the nodes' figures, by node id.
pub(crate) const NODES_KEY: &str = "fdx:{#control}:nodes";
/// The sorted set of the nodes' last heartbeats (milliseconds of Redis's clock).
pub(crate) const NODES_SEEN_KEY: &str = "fdx:{#control}:nodes-seen";
/// The name whose slot the control channel and the node keys have.
pub(crate) const CONTROL_SLOT_NAME: &str = "#control";

/// Forgets nodes not seen for `ARGV[1]` ms (KEYS: nodes, nodes-seen).
const FORGET_NODES: &str = r"
local function forget_nodes(stale)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms() - stale)
  for _, node in ipairs(gone) do
    redis.call('HDEL', KEYS[1], node)
    redis.call('ZREM', KEYS[2], node)
  end
end
";

/// KEYS: nodes, nodes-seen. ARGV: stale after (ms), node id, JSON. A node's heartbeat.
const NODE_BEAT: &str = r"
forget_nodes(tonumber(ARGV[1]))
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('ZADD', KEYS[2], now_ms(), ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
";

/// KEYS: nodes, nodes-seen. ARGV: stale after (ms). The live nodes' JSON.
const LIST_NODES: &str = r"
forget_nodes(tonumber(ARGV[1]))
return redis.call('HVALS', KEYS[1])
";

/// The engine's scripts, loaded once (EVALSHA, EVAL when Redis does not know them yet).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub publish: Script,
    pub read: Script,
    pub refresh_presence: Script,
    pub leave_presence: Script,
    pub list_presence: Script,
    pub node_beat: Script,
    pub list_nodes: Script,
}

impl Scripts {
    pub(crate) fn new() -> Scripts {
        let with = |parts: &[&str]| Script::new(&parts.concat());
        Scripts {
            publish: with(&[PRELUDE, PUBLISH]),
            read: with(&[PRELUDE, READ]),
            refresh_presence: with(&[PRELUDE, EXPIRE_PRESENCE, REFRESH_PRESENCE]),
            leave_presence: with(&[LEAVE_PRESENCE]),
            list_presence: with(&[PRELUDE, EXPIRE_PRESENCE, LIST_PRESENCE]),
            node_beat: with(&[PRELUDE, FORGET_NODES, NODE_BEAT]),
            list_nodes: with(&[PRELUDE, FORGET_NODES, LIST_NODES]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_topic_and_one_hash_tag() {
        let topic = Topic::new("chat.room-1").unwrap_or_else(|e| panic!("{e}"));
        let keys = TopicKeys::new(&topic);
        assert_eq!(keys.offset, "fdx:{chat.room-1}:offset");
        assert_eq!(keys.history, "fdx:{chat.room-1}:history");
        assert_eq!(keys.channel, "fdx:{chat.room-1}");
        assert_eq!(topic_of_channel(b"fdx:{chat.room-1}"), Some(topic));
        assert_eq!(topic_of_channel(b"fdx:{bad topic}"), None);
        assert_eq!(topic_of_channel(b"other"), None);
    }
}
