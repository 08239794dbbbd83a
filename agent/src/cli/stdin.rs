//! Reading a command's input from stdin, the one way every subcommand does it.

use std::io::Read;

use super::UsageError;

/// All of stdin as UTF-8 text; `what` names the input in the error (`"the prompt"`).
///
/// # Errors
/// Stdin cannot be read or is not UTF-8, as a [`UsageError`] (exit code 2).
pub fn read_stdin(what: &str) -> Result<String, UsageError> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .map_err(|e| UsageError::new(format!("cannot read {what} from stdin: {e}")))?;
    Ok(text)
}
