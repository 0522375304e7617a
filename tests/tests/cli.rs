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
