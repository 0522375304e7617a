//! The scripts the node runs in Redis. [`SEQUENCE`] sequences a batch of
//! messages atomically: it checks the cluster's epoch once, then for each
//! message whether it is a retry, takes the conversation's next seq, appends the
//! message to the conversation's stream under that seq (trimmed to what
//! retention keeps), and publishes the new messages to every node in one
//! message. One call per batch, not per message: the call, the epoch
//! check and the publish are paid once.

/// KEYS: the epoch, then per message its conversation's stream. The
/// stream's next id is `0-SEQ` (`XADD ... 0-*`): the stream keeps the
/// conversation's last seq, even once trimmed empty.
/// ARGV: the node's epoch, how long retries are recognised (s), the
/// channel to publish on, then five per message: its body, how many
/// messages the stream keeps, its retry field (`keys::retry_field`, empty
/// when it has no client message id), its server time, and `" LEN "` (the
/// body's length in bytes between spaces, for the publish).
///
/// Retries are remembered in one hash per period of the retry lifetime,
/// named from Redis's clock (so every node agrees): a retry is looked up
/// in this period's hash and the last one's, and a hash lives two periods
/// past its last write, so a first copy is recognised for at least the
/// lifetime and forgotten within three. One hash field per message costs
/// Redis about half what a key with its own expiry did.
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
local period = math.floor(tonumber(redis.call('TIME')[1]) / tonumber(ARGV[2]))
local now, before = 'apm:r:' .. period, 'apm:r:' .. (period - 1)
local remembered = false
for i = 1, #KEYS - 1 do
  local a = 4 + 5 * (i - 1)
  local retry = ARGV[a + 2]
  local first = false
  if retry ~= '' then
    first = redis.call('HGET', now, retry) or redis.call('HGET', before, retry)
  end
  if first then
    answers[i] = first
  else
    local id = redis.call('XADD', KEYS[i + 1], 'MAXLEN', '~', ARGV[a + 1], '0-*', 'm', ARGV[a])
    local seq = tonumber(string.sub(id, 3))
    if retry ~= '' then
      redis.call('HSET', now, retry, seq .. ' ' .. ARGV[a + 3])
      remembered = true
    end
    answers[i] = seq
    -- Pieces, joined once below: no string per message is made here.
    out[#out + 1] = seq
    out[#out + 1] = ARGV[a + 4]
    out[#out + 1] = ARGV[a]
  end
end
if remembered then
  redis.call('EXPIRE', now, 2 * tonumber(ARGV[2]))
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
