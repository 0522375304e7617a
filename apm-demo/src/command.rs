//! What a line typed at the prompt means: parsing input into [`Input`].
//!
//! Kept free of I/O so every command's syntax is unit-tested.

/// How many history messages `/history CHANNEL` asks for without a count.
pub(crate) const DEFAULT_HISTORY: u32 = 20;

/// The commands, one line each, as `/help` shows them.
pub(crate) const HELP: &[&str] = &[
    "/join CHANNEL        join a channel and talk in it",
    "/leave CHANNEL       leave a channel",
    "TEXT                 say TEXT in the current channel (//TEXT sends /TEXT)",
    "/msg USER TEXT       send TEXT to USER only",
    "/who CHANNEL         list the channel's members",
    "/online              list the users online",
    "/history CHANNEL [N] show the channel's last N messages",
    "/unread              unread counts of your channels and private messages",
    "/help                this list",
    "/quit                leave (so does end of input)",
];

/// One line of input, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    /// A blank line: nothing to do.
    Nothing,
    /// Text for the current channel.
    Say(String),
    /// `/join CHANNEL`.
    Join(String),
    /// `/leave CHANNEL`.
    Leave(String),
    /// `/msg USER TEXT`.
    Msg {
        /// The recipient.
        user: String,
        /// What to send.
        text: String,
    },
    /// `/who CHANNEL`.
    Who(String),
    /// `/online`.
    Online,
    /// `/history CHANNEL [N]`.
    History {
        /// The channel.
        channel: String,
        /// How many messages at most.
        limit: u32,
    },
    /// `/unread`.
    Unread,
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

/// Parses one line; `Err` carries a usage message for the user.
pub(crate) fn parse(line: &str) -> Result<Input, String> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(Input::Nothing);
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Input::Say(line.to_owned()));
    };
    if rest.starts_with('/') {
        // `//text` is how to say something that starts with a slash.
        return Ok(Input::Say(rest.to_owned()));
    }
    let (name, args) = match rest.split_once(char::is_whitespace) {
        Some((name, args)) => (name, args.trim()),
        None => (rest, ""),
    };
    let mut words = args.split_whitespace();
    match name {
        "join" | "j" => one_name(&mut words, "/join CHANNEL").map(Input::Join),
        "leave" | "part" => one_name(&mut words, "/leave CHANNEL").map(Input::Leave),
        "who" => one_name(&mut words, "/who CHANNEL").map(Input::Who),
        "msg" | "m" => {
            let usage = || "usage: /msg USER TEXT".to_owned();
            let (user, text) = args.split_once(char::is_whitespace).ok_or_else(usage)?;
            let text = text.trim_start();
            if text.is_empty() {
                return Err(usage());
            }
            Ok(Input::Msg {
                user: user.to_owned(),
                text: text.to_owned(),
            })
        }
        "online" => no_args(&mut words, "/online").map(|()| Input::Online),
        "history" => {
            let usage = || "usage: /history CHANNEL [N]".to_owned();
            let channel = words.next().ok_or_else(usage)?.to_owned();
            let limit = match words.next() {
                None => DEFAULT_HISTORY,
                Some(n) => n.parse().map_err(|_| usage())?,
            };
            if words.next().is_some() {
                return Err(usage());
            }
            Ok(Input::History { channel, limit })
        }
        "unread" => no_args(&mut words, "/unread").map(|()| Input::Unread),
        "help" | "?" => Ok(Input::Help),
        "quit" | "exit" | "q" => Ok(Input::Quit),
        _ => Err(format!("unknown command /{name} (try /help)")),
    }
}

fn one_name<'a>(words: &mut impl Iterator<Item = &'a str>, usage: &str) -> Result<String, String> {
    match (words.next(), words.next()) {
        (Some(name), None) => Ok(name.to_owned()),
        _ => Err(format!("usage: {usage}")),
    }
}

fn no_args<'a>(words: &mut impl Iterator<Item = &'a str>, usage: &str) -> Result<(), String> {
    match words.next() {
        None => Ok(()),
        Some(_) => Err(format!("usage: {usage}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_blank_lines() {
        assert_eq!(parse(""), Ok(Input::Nothing));
        assert_eq!(parse("   \r\n"), Ok(Input::Nothing));
        assert_eq!(parse("hello bob"), Ok(Input::Say("hello bob".into())));
        assert_eq!(parse("hi\r"), Ok(Input::Say("hi".into())));
        assert_eq!(parse("//etc"), Ok(Input::Say("/etc".into())));
    }

    #[test]
    fn commands() {
        assert_eq!(parse("/join room"), Ok(Input::Join("room".into())));
        assert_eq!(parse("/join  room "), Ok(Input::Join("room".into())));
        assert_eq!(parse("/leave room"), Ok(Input::Leave("room".into())));
        assert_eq!(parse("/who room"), Ok(Input::Who("room".into())));
        assert_eq!(parse("/online"), Ok(Input::Online));
        assert_eq!(parse("/help"), Ok(Input::Help));
        assert_eq!(parse("/quit"), Ok(Input::Quit));
        assert_eq!(
            parse("/msg bob  hi  there"),
            Ok(Input::Msg {
                user: "bob".into(),
                text: "hi  there".into()
            })
        );
        assert_eq!(
            parse("/history room 5"),
            Ok(Input::History {
                channel: "room".into(),
                limit: 5
            })
        );
        assert_eq!(
            parse("/history room"),
            Ok(Input::History {
                channel: "room".into(),
                limit: DEFAULT_HISTORY
            })
        );
    }

    #[test]
    fn usage_errors() {
        assert!(parse("/join").is_err());
        assert!(parse("/join a b").is_err());
        assert!(parse("/msg bob").is_err());
        assert!(parse("/msg bob   ").is_err());
        assert!(parse("/history room many").is_err());
        assert_eq!(parse("/unread"), Ok(Input::Unread));
        assert!(parse("/unread room").is_err());
        assert!(parse("/online now").is_err());
        assert_eq!(
            parse("/dance"),
            Err("unknown command /dance (try /help)".into())
        );
    }
}
