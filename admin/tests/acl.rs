//! `thruster-admin` against a broker with ACL (`aclEnable`): requests are signed with
//! `--accessKey`/`--secretKey`, admin-only commands need an admin account, and a refusal says
//! what to do.

use thruster_tests::ServerProcess;

mod common;
use common::{admin, admin_json};

const ACL: &str = "accounts:
  - accessKey: producer-ak
    secretKey: producer-secret
    defaultTopicPerm: PUB
  - accessKey: admin-ak-1
    secretKey: admin-secret
    admin: true
";

#[test]
fn admin_commands_sign_with_the_given_account() {
    let conf = tempfile::tempdir().expect("temp dir");
    let acl_file = conf.path().join("plain_acl.yml");
    std::fs::write(&acl_file, ACL).expect("acl file");
    let ns = ServerProcess::start("thruster-namesrv", &["--listen", "127.0.0.1:0"]);
    let path_setting = format!("aclFilePath={}", acl_file.display());
    let broker = ServerProcess::broker(ns.addr, 2, &["aclEnable=true", &path_setting]);
    let addr = broker.addr.to_string();
    let update = ["updateTopic", "-b", &addr, "-t", "AdminAclTopic"];

    let (ok, _, stderr) = admin(&ns, &update);
    assert!(!ok);
    assert!(
        stderr.contains("code 16 ACL: request code 17 has no AccessKey")
            && stderr.contains("give --accessKey and --secretKey"),
        "{stderr}"
    );
    let with = |ak: &str, sk: &str| {
        let mut args = vec!["--accessKey", ak, "--secretKey", sk];
        args.extend_from_slice(&update);
        admin(&ns, &args)
    };
    let (ok, _, stderr) = with("producer-ak", "producer-secret");
    assert!(!ok);
    assert!(
        stderr.contains("needs an admin account, and AccessKey=producer-ak is not one"),
        "{stderr}"
    );
    let (ok, _, stderr) = with("admin-ak-1", "wrong-secret");
    assert!(!ok);
    assert!(stderr.contains("signature check failed"), "{stderr}");
    let (ok, stdout, stderr) = with("admin-ak-1", "admin-secret");
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(&format!("create topic to {addr} success")),
        "{stdout}"
    );
    // Name server commands need no account (the name server does no ACL).
    let route = admin_json(&ns, &["topicRoute", "-t", "AdminAclTopic"]);
    assert!(route.to_string().contains(&addr), "{route}");

    let (ok, _, stderr) = admin(&ns, &["--accessKey", "admin-ak-1", "topicList"]);
    assert!(!ok);
    assert!(stderr.contains("go together"), "{stderr}");
}
