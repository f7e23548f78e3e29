//! The settings tables of docs/configuration.md, checked against each
//! server's flags.

/// Asserts that the settings table of docs/configuration.md under
/// `heading` lists every visible flag of `command` with its environment
/// variable and default, and besides them only `extra_rows` rows.
pub fn assert_settings_table(
    readme: &str,
    heading: &str,
    command: &clap::Command,
    extra_rows: usize,
) {
    let (wrong, rows, flags) = check_settings_table(readme, heading, command);
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(
        rows,
        flags + extra_rows,
        "the table under {heading:?} lists only {}'s flags",
        command.get_name()
    );
}

/// Checks a settings table of docs/configuration.md (the lines after
/// `### {heading}` up to the next heading) against a command's flags: every
/// visible flag has a row `` | `--flag` `` naming its environment variable
/// and default. Answers what is wrong, and how many rows and visible flags
/// there are.
pub fn check_settings_table(
    readme: &str,
    heading: &str,
    command: &clap::Command,
) -> (Vec<String>, usize, usize) {
    let Some(section) = readme
        .split(&format!("\n### {heading}\n"))
        .nth(1)
        .and_then(|rest| rest.split("\n#").next())
    else {
        return (
            vec![format!("docs/configuration.md has no '### {heading}'")],
            0,
            0,
        );
    };
    let mut wrong = Vec::new();
    let mut flags = 0;
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if matches!(long, "help" | "version") || arg.is_hide_set() {
            continue;
        }
        flags += 1;
        let Some(row) = section
            .lines()
            .find(|l| l.starts_with(&format!("| `--{long}`")))
        else {
            wrong.push(format!("no row for --{long}"));
            continue;
        };
        if let Some(env) = arg.get_env()
            && !row.contains(&format!("`{}`", env.to_string_lossy()))
        {
            wrong.push(format!(
                "--{long} row lacks {}: {row}",
                env.to_string_lossy()
            ));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        if !defaults.is_empty() && !row.contains(&format!("`{}`", defaults.join(","))) {
            wrong.push(format!(
                "--{long} row lacks default {}: {row}",
                defaults.join(",")
            ));
        }
    }
    let rows = section.lines().filter(|l| l.starts_with("| `--")).count();
    (wrong, rows, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command() -> clap::Command {
        clap::Command::new("demo").arg(
            clap::Arg::new("port")
                .long("port")
                .env("DEMO_PORT")
                .default_value("8080"),
        )
    }

    #[test]
    fn a_table_with_the_flag_its_variable_and_default_passes() {
        let doc = "x\n### demo\n| `--port` | `DEMO_PORT` | `8080` | where |\n";
        assert_eq!(
            check_settings_table(doc, "demo", &command()),
            (vec![], 1, 1)
        );
    }

    #[test]
    fn a_missing_row_a_wrong_default_or_no_heading_is_reported() {
        let missing = "x\n### demo\n| `--other` | `X` | `1` | what |\n";
        let (wrong, rows, flags) = check_settings_table(missing, "demo", &command());
        assert_eq!(
            (wrong, rows, flags),
            (vec!["no row for --port".to_owned()], 1, 1)
        );
        let stale = "x\n### demo\n| `--port` | `DEMO_PORT` | `80` | where |\n";
        let (wrong, _, _) = check_settings_table(stale, "demo", &command());
        assert_eq!(wrong.len(), 1, "{wrong:?}");
        assert!(wrong[0].contains("lacks default 8080"), "{wrong:?}");
        let (wrong, _, _) = check_settings_table("nothing", "demo", &command());
        assert_eq!(
            wrong,
            vec!["docs/configuration.md has no '### demo'".to_owned()]
        );
    }
}
