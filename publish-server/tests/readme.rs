//! The publish-server settings table of docs/configuration.md lists every
//! flag and environment variable publish-server takes, with its default,
//! and nothing else.

use clap::CommandFactory as _;

#[test]
fn every_flag_env_var_and_default_is_in_the_readme() {
    test_support::assert_settings_table(
        include_str!("../../docs/configuration.md"),
        "publish-server settings",
        &publish_server::Config::command(),
        0,
    );
}
