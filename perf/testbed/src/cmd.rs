//! Running helper programs (`ip`) and turning failures into [`TestbedError`]s.

use std::process::Command;

use crate::TestbedError;

/// Runs `ip <args>` and returns its standard output.
pub(crate) fn run_ip(args: &[&str]) -> Result<String, TestbedError> {
    run_checked(Command::new("ip").args(args))
}

/// Runs `cmd` to completion and returns its standard output (lossily decoded).
///
/// # Errors
///
/// [`TestbedError::Spawn`] if the program cannot be started, [`TestbedError::Command`]
/// (carrying its standard error) if it exits unsuccessfully.
pub fn run_checked(cmd: &mut Command) -> Result<String, TestbedError> {
    let output = cmd.output().map_err(|source| TestbedError::Spawn {
        cmd: describe(cmd),
        source,
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(TestbedError::Command {
            cmd: describe(cmd),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// The command line of `cmd`, for error messages.
fn describe(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}
