//! The configuration table of docs/configuration.md lists every flag and
//! environment variable chat-server takes, with its default, and besides
//! them only the launcher's own (marked "chat-dev only").

use clap::CommandFactory as _;

#[test]
fn every_flag_env_var_and_default_is_in_the_readme() {
    let readme = include_str!("../../docs/configuration.md");
    let launcher_rows = readme
        .lines()
        .filter(|l| l.contains("(chat-dev only)"))
        .count();
    test_support::assert_settings_table(
        readme,
        "chat-server settings",
        &chat_server::Config::command(),
        launcher_rows,
    );
}
