//! The `apm-server` binary's commands as a shell runs them.

use std::process::{Command, Output};

use apm_tests::{SECRET, workspace_binary};

fn apm_server(args: &[&str]) -> Output {
    Command::new(workspace_binary("apm-server"))
        .args(args)
        .env_remove("APM_SECRET")
        .env_remove("APM_CONFIG")
        .output()
        .expect("run apm-server")
}

#[test]
fn token_refuses_a_user_id_the_server_would_refuse() {
    let out = apm_server(&["token", "--user", "alice smith", "--secret", SECRET]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{:?}", out.status);
    // Nothing a script capturing the token could take for one.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(stderr.contains("user id"), "{stderr}");
    assert!(stderr.contains("alice smith"), "{stderr}");
}

#[test]
fn token_prints_a_token_the_server_accepts() {
    let out = apm_server(&[
        "token", "--user", "alice", "--ttl", "1m", "--secret", SECRET,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = apm_server::auth::verify(SECRET.as_bytes(), token.trim()).unwrap();
    assert_eq!(claims.user, "alice");
}

#[test]
fn token_grants_channels() {
    let out = apm_server(&[
        "token",
        "--user",
        "alice",
        "--channel",
        "private.*",
        "--channel",
        "team",
        "--secret",
        SECRET,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let claims = apm_server::auth::verify(SECRET.as_bytes(), token.trim()).unwrap();
    assert_eq!(claims.channels, ["private.*", "team"]);

    let out = apm_server(&[
        "token",
        "--user",
        "alice",
        "--channel",
        "a b",
        "--secret",
        SECRET,
    ]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("channel claim \"a b\""), "{stderr}");
}

/// The container's settings (`deploy`, `Dockerfile`): on 0.0.0.0 the
/// server refuses to start without a secret, and says so.
#[test]
fn all_interfaces_without_a_secret_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(workspace_binary("apm-server"))
        .env_remove("APM_SECRET")
        .env_remove("APM_CONFIG")
        .env("APM_LISTEN", "0.0.0.0:0")
        .env("APM_DATA_DIR", dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run apm-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no secret is set"), "{stderr}");
}

/// The same settings with a secret: it listens on every interface.
#[test]
fn all_interfaces_with_a_secret_listens() {
    use std::io::{BufRead, BufReader};

    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(workspace_binary("apm-server"))
        .env_remove("APM_CONFIG")
        .env("APM_SECRET", SECRET)
        .env("APM_LISTEN", "0.0.0.0:0")
        .env("APM_DATA_DIR", dir.path())
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run apm-server");
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    let mut listening = None;
    for line in stderr.lines() {
        let line = line.unwrap();
        if line.contains("listening") {
            listening = Some(line.clone());
        }
        seen.push(line);
        if listening.is_some() {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = listening.unwrap_or_else(|| panic!("never listened:\n{}", seen.join("\n")));
    assert!(line.contains("addr=0.0.0.0:"), "{line}");
    // The path as given (absolute already), as the server logs it.
    let data_dir = dir.path().display().to_string();
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("data_dir={data_dir}"))),
        "{}",
        seen.join("\n")
    );
}
