//! What `ps-globus` prints under an error: the library's typed [`Remedy`], said as the
//! command to run or the setting to change.

use ps_globus::error::Remedy;

/// A service identity, for machines where nobody can open a browser.
const SERVICE_IDENTITY: &str =
    "use a service identity (PS_GLOBUS_CLIENT_ID and PS_GLOBUS_CLIENT_SECRET)";

/// The hint for `error`, if it has a remedy.
pub(crate) fn hint(error: &ps_globus::Error) -> Option<String> {
    error.remedy().map(say)
}

/// `remedy`, in this command's words.
pub(crate) fn say(remedy: &Remedy) -> String {
    match remedy {
        Remedy::Login { collections } if !collections.is_empty() => {
            format!("run `{}`", login_command(collections))
        }
        Remedy::Login { .. } => format!(
            "run `ps-globus login`. On a compute node without a keyring, log in with \
             PS_GLOBUS_TOKEN_STORE=file where the state directory is shared, or \
             {SERVICE_IDENTITY}"
        ),
        // A token from the environment is used as is: a login would not replace it.
        Remedy::LoginAgain if ps_globus::Settings::global().access_token.is_some() => {
            "Globus refuses the token in PS_GLOBUS_ACCESS_TOKEN: set a valid one, or unset it \
             to use your stored login (`ps-globus login`)"
                .into()
        }
        Remedy::LoginAgain => {
            format!("run `ps-globus login`, or on a compute node {SERVICE_IDENTITY}")
        }
        Remedy::ResumeTaskByLogin => "run `ps-globus login` (with `--collection <id>` for each \
                                      collection involved); the task resumes by itself"
            .into(),
        Remedy::GrantAccessOrCancelTask { task_id } => format!(
            "grant this identity access to the path (or fix the path's permissions) at the \
             collection; the task resumes by itself, or cancel it with `ps-globus task cancel \
             {task_id}`"
        ),
        Remedy::ConfigureSites => "no site is configured: run `ps-globus config init`, then \
                                   `ps-globus site add NAME COLLECTION_ID --collection-path \
                                   PATH --local-path DIR` for each site"
            .into(),
        Remedy::RaiseLimitOrCheckTransfers => "raise the time limit (a store's \
                                               resolve_timeout, a wait's timeout), or check \
                                               that the awaited transfer is on its way \
                                               (`ps-globus status`)"
            .into(),
        Remedy::Advice(advice) => advice.clone(),
        // A remedy added by a later library release: the message says enough.
        _ => "see the message above".into(),
    }
}

/// The login command that grants `data_access` consents for `collections`.
fn login_command(collections: &[String]) -> String {
    let mut command = String::from("ps-globus login");
    for c in collections {
        command.push_str(" --collection ");
        command.push_str(c);
    }
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use ps_globus::error::{ConsentRequired, NeedsAttention};

    #[test]
    fn each_remedy_is_said_as_the_command_that_applies_it() {
        let consent =
            ps_globus::Error::from(ConsentRequired::new(vec![], vec!["c1".into(), "c2".into()]));
        assert_eq!(
            hint(&consent).unwrap(),
            "run `ps-globus login --collection c1 --collection c2`"
        );
        let login = ps_globus::Error::login_required("no stored login");
        assert!(hint(&login).unwrap().starts_with("run `ps-globus login`."));
        let paused = ps_globus::Error::from(NeedsAttention::access("t-9", "r"));
        assert!(
            hint(&paused)
                .unwrap()
                .contains("`ps-globus task cancel t-9`")
        );
        let plain = ps_globus::Error::new(ps_globus::ErrorKind::InvalidInput, "bad");
        assert_eq!(hint(&plain), None);
    }
}
