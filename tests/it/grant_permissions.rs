//! scripts/grant-permissions.sh --dry-run: prints every call for the configured channels and
//! makes none (a fake `az`, `azd` and `curl` first on PATH record any call and fail).

use std::path::{Path, PathBuf};
use std::process::Command;

struct DryRun {
    output: String,
    calls: String,
}

fn dry_run(args: &[&str]) -> DryRun {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    for tool in ["az", "azd", "curl"] {
        let path = dir.path().join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> '{}'\nexit 1\n",
                log.display()
            ),
        )
        .unwrap();
        make_executable(&path);
    }
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let out = Command::new("bash")
        .arg(repo.join("scripts/grant-permissions.sh"))
        .arg("--dry-run")
        .args(args)
        .env_clear()
        .env("PATH", path)
        .output()
        .unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{output}");
    DryRun {
        output,
        calls: std::fs::read_to_string(&log).unwrap_or_default(),
    }
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn grants(output: &str) -> Vec<&str> {
    output
        .lines()
        .filter(|l| l.ends_with(": would be granted"))
        .map(|l| l.trim().trim_end_matches(": would be granted"))
        .collect()
}

#[test]
fn a_dry_run_without_arguments_prints_every_call_and_makes_none() {
    let run = dry_run(&[]);
    assert_eq!(run.calls, "", "no tool may run in a dry run");
    assert_eq!(
        grants(&run.output),
        [
            "User.Read.All",
            "TeamsAppInstallation.ReadWriteSelfForUser.All",
            "Sites.Selected"
        ]
    );
    for call in [
        "[dry-run] az rest --method post --uri https://graph.microsoft.com/v1.0/servicePrincipals/",
        "[dry-run] az rest --method post --uri https://graph.microsoft.com/v1.0/sites/",
        "[dry-run] curl -X POST https://graph.microsoft.com/v1.0/appCatalogs/teamsApps",
        "[dry-run] azd env set REMINDERS_TEAMS_APP_ID",
        "[dry-run] az functionapp config appsettings set",
        "New-ManagementRoleAssignment -App <MANAGED_IDENTITY_CLIENT_ID> -Role 'Application Mail.Send'",
    ] {
        assert!(run.output.contains(call), "missing {call}:\n{}", run.output);
    }
    assert!(run.output.contains("dry run: nothing was changed"));
}

#[test]
fn only_the_roles_the_configured_channels_need_are_granted() {
    let run = dry_run(&["--channels", "email", "--source", "blob"]);
    assert_eq!(grants(&run.output), ["User.Read.All"]);
    assert!(
        !run.output.contains("appCatalogs/teamsApps"),
        "{}",
        run.output
    );
    assert!(!run.output.contains("/sites/"), "{}", run.output);

    let run = dry_run(&["--channels", "workflows", "--source", "blob"]);
    assert_eq!(grants(&run.output), Vec::<&str>::new());
    assert!(!run.output.contains("--method post"), "{}", run.output);
    assert!(!run.output.contains("Mail.Send"), "{}", run.output);
    assert_eq!(run.calls, "");
}

#[test]
fn mail_send_is_never_granted_tenant_wide_in_graph() {
    for channels in ["email", "teams_bot,email"] {
        let run = dry_run(&["--channels", channels, "--sender", "reminders@contoso.com"]);
        assert!(!grants(&run.output).contains(&"Mail.Send"));
        assert!(run
            .output
            .contains("PrimarySmtpAddress -eq 'reminders@contoso.com'"));
    }
}

#[test]
fn the_site_grant_targets_the_configured_site() {
    let run = dry_run(&[
        "--channels",
        "teams_bot",
        "--site-url",
        "https://contoso.sharepoint.com/sites/Mobility/",
        "--client-id",
        "1542629c-01b3-4a6d-8f76-1938b779e48d",
    ]);
    assert!(
        run.output
            .contains("/v1.0/sites/contoso.sharepoint.com:/sites/Mobility "),
        "{}",
        run.output
    );
    assert!(run
        .output
        .contains(r#"application\":\{\"id\":\"1542629c-01b3-4a6d-8f76-1938b779e48d\""#));
}

#[test]
fn the_site_grant_is_read_and_becomes_write_only_when_the_page_is_published_there() {
    let read = dry_run(&["--channels", "teams_bot"]);
    assert!(
        read.output.contains(r#"roles\":\[\"read\"\]"#) && !read.output.contains(r#"\"write\""#),
        "{}",
        read.output
    );
    let write = dry_run(&[
        "--channels",
        "teams_bot",
        "--report-folder",
        "General/Power Automate/reports",
    ]);
    assert!(
        write.output.contains(r#"roles\":\[\"write\"\]"#) && !write.output.contains(r#"\"read\""#),
        "{}",
        write.output
    );
    assert!(write.output.contains("== Sites.Selected write grant on"));
    assert_eq!(write.calls, "");
}

#[test]
fn an_unknown_argument_is_refused_by_name() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(repo.join("scripts/grant-permissions.sh"))
        .args(["--dry-run", "--chanels", "email"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("'--chanels'"));
}
