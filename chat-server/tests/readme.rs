//! The README's configuration table lists every flag and environment
//! variable chat-server takes, with its default.

use clap::CommandFactory as _;

#[test]
fn every_flag_env_var_and_default_is_in_the_readme() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n### chat-server settings\n")
        .nth(1)
        .and_then(|rest| rest.split("\n#").next())
        .expect("README has a '### chat-server settings' section");
    let command = chat_server::Config::command();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") {
            continue;
        }
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| `--{long}`")))
            .unwrap_or_else(|| panic!("README has no row for --{long}"));
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            assert!(
                row.contains(&format!("`{env}`")),
                "--{long} row lacks {env}: {row}"
            );
        }
        for default in arg.get_default_values() {
            let default = default.to_string_lossy();
            assert!(
                row.contains(&format!("`{default}`")),
                "--{long} row lacks default {default}: {row}"
            );
        }
    }
}
