//! The scheduler settings table of docs/configuration.md lists every flag
//! and environment variable the scheduler takes, with its default, and
//! nothing else.

use clap::CommandFactory as _;

#[test]
fn every_flag_env_var_and_default_is_in_the_readme() {
    test_support::assert_settings_table(
        include_str!("../../docs/configuration.md"),
        "scheduler settings",
        &scheduler::Config::command(),
        0,
    );
}
