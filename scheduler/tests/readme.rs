//! The README's scheduler settings table lists every flag and
//! environment variable the scheduler takes, with its default.

use clap::CommandFactory as _;

#[test]
fn every_flag_env_var_and_default_is_in_the_readme() {
    let readme = include_str!("../../README.md");
    let section = readme
        .split("\n### scheduler settings\n")
        .nth(1)
        .and_then(|rest| rest.split("\n#").next())
        .expect("README has a '### scheduler settings' section");
    let command = scheduler::Config::command();
    let mut rows = 0;
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") || arg.is_hide_set() {
            continue;
        }
        rows += 1;
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| `--{long}`")))
            .unwrap_or_else(|| panic!("README's scheduler table has no row for --{long}"));
        if let Some(env) = arg.get_env() {
            let env = env.to_string_lossy();
            assert!(
                row.contains(&format!("`{env}`")),
                "--{long} row lacks {env}: {row}"
            );
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() {
            let default = defaults.join(",");
            assert!(
                row.contains(&format!("`{default}`")),
                "--{long} row lacks default {default}: {row}"
            );
        }
    }
    let table_rows = section.lines().filter(|l| l.starts_with("| `--")).count();
    assert_eq!(
        table_rows, rows,
        "the table lists only the scheduler's flags"
    );
}
