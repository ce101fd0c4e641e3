//! Shell text for commands sent through SSM Run Command (`AWS-RunShellScript`, which runs the
//! lines with `sh`): the one quoting function, and the builder of the shop restart command.
//!
//! Customer-derived values reach a shell only through [`quote`], and the builders take only
//! validated types ([`Hostname`], integers), so even a bug in validation would still leave each
//! value a single word. Sending the command and tracking it per instance belong to the restart
//! reconciler.

use crate::hostname::Hostname;

/// Where the deployment installs each shop on its instances: `<SHOPS_ROOT>/<shop_domain>`,
/// holding the unpacked revision with its `scripts/` folder.
pub const SHOPS_ROOT: &str = "/srv/shops";

/// Where each shop's placement is handed to its hooks on the instances:
/// `<SHOP_ENV_DIR>/<shop_domain>.env`, holding `SHOP_DOMAIN` and `SHOP_PORT`. CodeDeploy passes
/// hooks no values of ours, and the artifact cannot carry the port (it is built before the
/// shop is placed, and reused), so the controller writes this file before every deployment
/// and the shop's scripts read it (`. /etc/shop-controller/shops/$SHOP_DOMAIN.env`; the build
/// knows `SHOP_DOMAIN`).
pub const SHOP_ENV_DIR: &str = "/etc/shop-controller/shops";

/// The restart of one shop on one instance: its own `scripts/stop.sh`, then
/// `scripts/start.sh`, the same hooks CodeDeploy runs, with the same inputs.
///
/// The scripts get the port as `SHOP_PORT` (what the hooks read during a deployment) and as
/// their first argument, and the domain as `SHOP_DOMAIN`. The script stops at the first failure
/// (`set -eu`), so a stop that fails is reported instead of starting a second copy of the shop
/// next to a running one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartCommand {
    shop: Hostname,
    port: u16,
}

/// Quotes `word` as exactly one POSIX shell word, whatever it holds: the result is wrapped in
/// single quotes, inside which the shell interprets nothing, and each `'` becomes `'\''` (close
/// the quote, an escaped quote, reopen).
///
/// A NUL byte cannot be part of any shell word or argument; shells drop or truncate at it, but
/// it cannot end the quoting either.
pub fn quote(word: &str) -> String {
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    for c in word.chars() {
        if c == '\'' {
            quoted.push_str(r"'\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

impl RestartCommand {
    /// The restart of `shop`, which listens on `port` on its instances.
    pub fn new(shop: &Hostname, port: u16) -> Self {
        Self {
            shop: shop.clone(),
            port,
        }
    }

    /// The shop's directory on an instance.
    pub fn shop_dir(&self) -> String {
        format!("{SHOPS_ROOT}/{}", self.shop)
    }

    /// The script lines, one `commands` entry each, for `AWS-RunShellScript`.
    pub fn commands(&self) -> Vec<String> {
        vec![
            "set -eu".to_owned(),
            format!("cd {}", quote(&self.shop_dir())),
            self.hook("scripts/stop.sh"),
            self.hook("scripts/start.sh"),
        ]
    }

    /// A short description for the SSM command's comment field (at most 100 characters).
    pub fn comment(&self) -> String {
        self.describe("restart")
    }

    /// `what` the command does to the shop, for the SSM comment (at most 100 characters).
    pub fn describe(&self, what: &str) -> String {
        let comment = format!("{what} shop {} on port {}", self.shop, self.port);
        comment.chars().take(100).collect()
    }

    /// The shop's env file on an instance.
    pub fn env_file(&self) -> String {
        format!("{SHOP_ENV_DIR}/{}.env", self.shop)
    }

    /// Writes the shop's env file (atomically: a hook never reads half of it).
    pub fn install_env(&self) -> Vec<String> {
        let file = quote(&self.env_file());
        let temporary = quote(&format!("{}.tmp", self.env_file()));
        vec![
            "set -eu".to_owned(),
            format!("mkdir -p {}", quote(SHOP_ENV_DIR)),
            format!(
                "printf 'SHOP_DOMAIN=%s\\nSHOP_PORT=%s\\n' {} {} > {temporary}",
                quote(self.shop.as_str()),
                quote(&self.port.to_string()),
            ),
            format!("mv -f {temporary} {file}"),
        ]
    }

    /// Stops the shop for good (its own `scripts/stop.sh`, when installed) and removes what
    /// the deployment and the controller put on the instance.
    pub fn uninstall(&self) -> Vec<String> {
        let dir = quote(&self.shop_dir());
        vec![
            "set -eu".to_owned(),
            format!(
                "if [ -x {dir}/scripts/stop.sh ]; then cd {dir} && {}; cd /; fi",
                self.hook("scripts/stop.sh")
            ),
            format!("rm -rf -- {dir} {}", quote(&self.env_file())),
        ]
    }

    fn hook(&self, script: &str) -> String {
        let port = quote(&self.port.to_string());
        format!(
            "SHOP_DOMAIN={} SHOP_PORT={port} ./{script} {port}",
            quote(self.shop.as_str())
        )
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    const HOSTILE: [&str; 16] = [
        "",
        "plain",
        "two words",
        "it's",
        "'",
        "''",
        "'\\''",
        "\\",
        "$(id)",
        "`id`",
        "${HOME}",
        "a;rm -rf /",
        "a\nb",
        "-n",
        "* ? [a] ~",
        "\"double\" 'single' $var \t tab",
    ];

    #[test]
    fn quotes_each_input_as_one_single_quoted_word() {
        for (word, expected) in [
            ("", "''"),
            ("plain", "'plain'"),
            ("two words", "'two words'"),
            ("it's", r"'it'\''s'"),
            ("'", r"''\'''"),
            ("$(id)", "'$(id)'"),
            ("`id`", "'`id`'"),
            ("a;rm -rf /", "'a;rm -rf /'"),
            ("a\nb", "'a\nb'"),
            ("\\", r"'\'"),
            ("münchen", "'münchen'"),
        ] {
            assert_eq!(quote(word), expected, "{word:?}");
        }
    }

    /// The real test of quoting: a shell hands the word back unchanged, as one argument.
    #[test]
    fn shell_reads_every_quoted_word_back_unchanged() {
        for word in HOSTILE {
            let script = format!("set -- {}; printf '%s|%s' \"$#\" \"$1\"", quote(word));
            let output = Command::new("sh")
                .args(["-c", &script])
                .output()
                .expect("run sh");

            assert!(output.status.success(), "{word:?}: {output:?}");
            assert_eq!(String::from_utf8_lossy(&output.stdout), format!("1|{word}"));
        }
    }

    #[test]
    fn restart_command_quotes_every_value() {
        let shop = Hostname::parse("example.es-hs.com").expect("valid");
        let command = RestartCommand::new(&shop, 8123);

        assert_eq!(
            command.commands(),
            [
                "set -eu",
                "cd '/srv/shops/example.es-hs.com'",
                "SHOP_DOMAIN='example.es-hs.com' SHOP_PORT='8123' ./scripts/stop.sh '8123'",
                "SHOP_DOMAIN='example.es-hs.com' SHOP_PORT='8123' ./scripts/start.sh '8123'",
            ]
        );
        assert_eq!(
            command.comment(),
            "restart shop example.es-hs.com on port 8123"
        );
    }

    #[test]
    fn restart_command_runs_stop_then_start_with_the_port() {
        let root = std::env::temp_dir().join(format!("shell-test-{}", std::process::id()));
        let shop = Hostname::parse("example.es-hs.com").expect("valid");
        let command = RestartCommand::new(&shop, 8123);
        let dir = root.join(shop.as_str());
        std::fs::create_dir_all(dir.join("scripts")).expect("create scripts dir");
        for hook in ["stop", "start"] {
            let body = format!("#!/bin/sh\necho \"{hook} $SHOP_DOMAIN $SHOP_PORT $1\"\n");
            write_executable(&dir.join(format!("scripts/{hook}.sh")), &body);
        }

        let script = command.commands()[2..].join("\n");
        let output = Command::new("sh")
            .args([
                "-c",
                &format!("set -eu\ncd {}\n{script}", quote(&path(&dir))),
            ])
            .output()
            .expect("run sh");
        std::fs::remove_dir_all(&root).expect("clean up");

        assert!(output.status.success(), "{output:?}");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "stop example.es-hs.com 8123 8123\nstart example.es-hs.com 8123 8123\n"
        );
    }

    #[test]
    fn comment_fits_ssm_limit_for_the_longest_names() {
        let long = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(61));
        let shop = Hostname::parse(&long).expect("valid");

        assert!(RestartCommand::new(&shop, 65535).comment().len() <= 100);
    }

    /// The env file and the uninstall, run by a real shell with the instance paths moved
    /// under a temporary directory.
    #[test]
    fn env_file_is_written_and_uninstall_removes_the_shop() {
        let root = std::env::temp_dir().join(format!("shell-env-{}", std::process::id()));
        let moved = |line: &str| {
            line.replace(SHOP_ENV_DIR, &path(&root.join("env")))
                .replace(SHOPS_ROOT, &path(&root.join("shops")))
        };
        let shop = Hostname::parse("example.es-hs.com").expect("valid");
        let command = RestartCommand::new(&shop, 8123);
        let dir = root.join("shops").join(shop.as_str());
        std::fs::create_dir_all(dir.join("scripts")).expect("create scripts dir");
        let log = root.join("stopped");
        let body = format!(
            "#!/bin/sh\necho \"stop $SHOP_DOMAIN $1\" > {}\n",
            quote(&path(&log))
        );
        write_executable(&dir.join("scripts/stop.sh"), &body);

        let run = |lines: Vec<String>| {
            let script: Vec<String> = lines.iter().map(|l| moved(l)).collect();
            Command::new("sh")
                .args(["-c", &script.join("\n")])
                .output()
                .expect("run sh")
        };
        let installed = run(command.install_env());
        let env = std::fs::read_to_string(moved(&command.env_file())).unwrap_or_default();
        let uninstalled = run(command.uninstall());
        let stopped = std::fs::read_to_string(&log).unwrap_or_default();
        let left = (
            dir.exists(),
            std::path::Path::new(&moved(&command.env_file())).exists(),
        );
        let again = run(command.uninstall());
        std::fs::remove_dir_all(&root).expect("clean up");

        assert!(installed.status.success(), "{installed:?}");
        assert_eq!(env, "SHOP_DOMAIN=example.es-hs.com\nSHOP_PORT=8123\n");
        assert!(uninstalled.status.success(), "{uninstalled:?}");
        assert_eq!(stopped, "stop example.es-hs.com 8123\n");
        assert_eq!(left, (false, false), "the shop's files are gone");
        assert!(
            again.status.success(),
            "uninstalling twice is fine: {again:?}"
        );
    }

    fn write_executable(file: &std::path::Path, body: &str) {
        use std::os::unix::fs::PermissionsExt;

        std::fs::write(file, body).expect("write hook");
        std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    fn path(dir: &std::path::Path) -> String {
        dir.to_str().expect("utf-8 temp path").to_owned()
    }
}
