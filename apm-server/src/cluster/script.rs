//! The scripts the node runs in Redis. [`SEQUENCE`] sequences a batch of
//! messages atomically: it checks the cluster's epoch once, then for each
//! message the retry key, takes the conversation's next seq, appends the
//! message to the conversation's stream under that seq (trimmed to what
//! retention keeps), and publishes the new messages to every node in one
//! message. One call per batch, not per message: the call, the epoch
//! check and the publish are paid once.

/// KEYS: the epoch, then two per message: the conversation's stream and
/// the retry key (the stream again when the message has none). The
/// stream's next id is `0-SEQ` (`XADD ... 0-*`): the stream keeps the
/// conversation's last seq, even once trimmed empty.
/// ARGV: the node's epoch, the retry keys' lifetime (s), the channel to
/// publish on, then five per message: its body, how many messages the
/// stream keeps, whether it has a retry key ("1"), its server time, and
/// `" LEN "` (the body's length in bytes between spaces, for the
/// publish).
///
/// Answers `{-1, EPOCH}` when Redis holds another epoch (or none: its
/// data was lost), else one answer per message: its seq (an integer) for
/// a new message, `"SEQ TS"` for a retry of one sequenced before.
///
/// What is published is, per new message, `SEQ LEN BODY` (decimal seq, a
/// space, the body's length in bytes, a space, the body), back to back.
pub(super) const SEQUENCE: &str = r#"
local epoch = redis.call('GET', KEYS[1])
if epoch ~= ARGV[1] then
  return {-1, epoch or ''}
end
local answers = {}
local out = {}
local n = (#KEYS - 1) / 2
for i = 0, n - 1 do
  local k = 2 + 2 * i
  local a = 4 + 5 * i
  local first = false
  if ARGV[a + 2] == '1' then
    first = redis.call('GET', KEYS[k + 1])
  end
  if first then
    answers[i + 1] = first
  else
    local id = redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[a + 1], '0-*', 'm', ARGV[a])
    local seq = tonumber(string.sub(id, 3))
    if ARGV[a + 2] == '1' then
      redis.call('SET', KEYS[k + 1], seq .. ' ' .. ARGV[a + 3], 'EX', ARGV[2])
    end
    answers[i + 1] = seq
    -- Pieces, joined once below: no string per message is made here.
    out[#out + 1] = seq
    out[#out + 1] = ARGV[a + 4]
    out[#out + 1] = ARGV[a]
  end
end
if #out > 0 then
  redis.call('PUBLISH', ARGV[3], table.concat(out))
end
return answers
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
