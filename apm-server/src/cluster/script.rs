//! The script that sequences one message in Redis, atomically: checks the
//! cluster's epoch and the retry key, takes the conversation's next seq,
//! appends the message to the conversation's stream under that seq
//! (trimmed to what retention keeps) and publishes it to every node.

/// KEYS: the epoch, the conversation's seq, its stream, the retry key.
/// ARGV: the node's epoch, the message body, how many messages the stream
/// keeps, the retry key's lifetime (s), the channel to publish on,
/// whether the message has a retry key ("1"), the message's server time.
///
/// Answers `{1, seq}` for a new message, `{0, "SEQ TS"}` for a retry of
/// one sequenced before, `{-1, EPOCH}` when Redis holds another epoch (or
/// none: its data was lost).
pub(super) const SEQUENCE: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then
  return {-1, epoch or ''}
end
if ARGV[6] == '1' then
  local first = redis.call('GET', KEYS[4])
  if first then
    return {0, first}
  end
end
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '0-' .. seq, 'm', ARGV[2])
if ARGV[6] == '1' then
  redis.call('SET', KEYS[4], seq .. ' ' .. ARGV[7], 'EX', ARGV[4])
end
redis.call('PUBLISH', ARGV[5], seq .. ' ' .. ARGV[2])
return {1, seq}
"#;

/// Moves a user's read position forward, never back, and tells every node.
///
/// KEYS: the conversation's read positions. ARGV: the user, the seq, the
/// channel to publish on, what to publish.
pub(super) const ACK: &str = r#"
local before = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if tonumber(ARGV[2]) > before then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[4])
end
return 0
"#;
