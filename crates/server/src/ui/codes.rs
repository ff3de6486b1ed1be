//! Result codes in words, for operators: the agent's result code by its constant name
//! (`duhub_proto::result::ResultCode::KNOWN`), and an extended result code by the named codes
//! of `duhub_proto::result`, the script handler's exit code, or its facility and parts.

use duhub_proto::result::{ExtendedResultCode as Erc, ResultCode};

/// Named extended result codes and what they mean.
const KNOWN: &[(Erc, &str)] = &[
    (Erc::INVALID_ACTION_JSON, "the update action JSON is invalid"),
    (Erc::MANIFEST_VALIDATION_FAILED, "the update manifest is unsigned or its signature or hash does not verify"),
    (Erc::NO_ACTION, "the update action is missing"),
    (Erc::NO_UPDATE_ID, "the update id is missing"),
    (Erc::NO_UPDATE_TYPE, "the update type is missing"),
    (Erc::BAD_UPDATE_TYPE, "the update type is invalid"),
    (Erc::NO_INSTALLED_CRITERIA, "the installed criteria are missing"),
    (Erc::BAD_FILES_OR_FILE_URLS, "the files or file URLs are invalid"),
    (Erc::NO_MANIFEST, "the update manifest is missing"),
    (Erc::BAD_MANIFEST, "the update manifest is invalid"),
    (Erc::UNSUPPORTED_MANIFEST_VERSION, "the manifest version is not supported"),
    (Erc::MISSING_DETACHED_MANIFEST_ENTITY, "the detached manifest file is missing"),
    (Erc::BAD_DETACHED_MANIFEST, "the detached manifest is invalid"),
    (Erc::DETACHED_MANIFEST_DOWNLOAD_FAILED, "the detached manifest could not be downloaded"),
    (Erc::BAD_DETACHED_MANIFEST_JSON_FILE, "the detached manifest is not valid JSON"),
    (Erc::DETACHED_MANIFEST_MISSING_UPDATE_MANIFEST, "the detached manifest has no update manifest"),
    (Erc::BAD_WORKFLOW_ACTION, "the workflow action is invalid"),
    (Erc::MISSING_ROOTKEY_PACKAGE_URL, "the root key package URL is missing"),
    (Erc::ROOTKEY_PKG_FAIL_JSON_PARSE, "the root key package is not valid JSON"),
    (Erc::ROOTKEY_PKG_FAIL_JSON_SERIALIZE, "the root key package could not be serialised"),
    (Erc::ROOTKEY_STORE_PATH_CREATE, "the root key store folder could not be created"),
    (Erc::ROOTKEY_SIGNINGKEY_DISABLE_EVAL_INVALID_HASHALG, "a disabled signing key names an unsupported hash"),
    (Erc::ROOTKEY_SIGNING_KEY_IS_DISABLED, "the manifest's signing key is disabled"),
    (Erc::ROOTKEY_PROD_PKG_ON_TEST_AGENT, "a production root key package was given to a test agent"),
    (Erc::ROOTKEY_TEST_PKG_ON_PROD_AGENT, "a test root key package was given to a production agent"),
    (Erc::ROOTKEY_PACKAGE_CHANGED, "the stored root key package changed"),
    (Erc::ROOTKEY_PKG_UNCHANGED, "the root key package is unchanged"),
    (Erc::JWS_BAD_STRUCTURE, "the manifest signature is malformed"),
    (Erc::JWS_INVALID_SIGNATURE, "the manifest signature is invalid"),
    (Erc::JWS_DISALLOWED_ROOT_KID, "the manifest is signed under a root key the device does not allow"),
    (Erc::JWS_MISSING_ROOT_KID, "the manifest signature names no root key"),
    (Erc::JWS_INVALID_ROOT_KID, "the manifest signature names an unknown root key"),
    (Erc::SCRIPT_FAILURE_WITHOUT_ERC, "the script reported a failure without an extended result code"),
];

/// A result code in words: `"APPLY_SUCCESS"` becomes `"apply success"`; unknown codes give
/// `"result N"`.
pub(crate) fn result_words(code: ResultCode) -> String {
    match code.name() {
        Some(name) => name.to_ascii_lowercase().replace('_', " "),
        None => format!("result {}", code.0),
    }
}

/// An extended result code in words.
pub(crate) fn extended_words(code: Erc) -> String {
    if code.is_none() {
        return "no extended result".into();
    }
    if let Some((_, text)) = KNOWN.iter().find(|(known, _)| *known == code) {
        return (*text).into();
    }
    if let Some(exit) = code.script_exit_code() {
        return format!("the install script exited with code {exit}");
    }
    let facility = code
        .known_facility()
        .map_or_else(|| format!("facility {:X}", code.facility()), |f| f.name().to_ascii_lowercase().replace('_', " "));
    if code.facility() == 0 && code.component() == 0 {
        // Facility 0 carries errno values and common errors.
        return format!("error {} ({})", code.value(), errno_words(code.value()).unwrap_or("system error"));
    }
    format!("{facility} error: component {}, value 0x{:X}", code.component(), code.value())
}

fn errno_words(value: u32) -> Option<&'static str> {
    Some(match value {
        1 => "operation not permitted",
        2 => "no such file or directory",
        5 => "input/output error",
        12 => "out of memory",
        13 => "permission denied",
        28 => "no space left on device",
        110 => "connection timed out",
        111 => "connection refused",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_codes_in_words() {
        assert_eq!(result_words(ResultCode(700)), "apply success");
        assert_eq!(result_words(ResultCode(0)), "failure");
        assert_eq!(result_words(ResultCode(12345)), "result 12345");
    }

    #[test]
    fn extended_codes_in_words() {
        assert_eq!(extended_words(Erc::JWS_INVALID_SIGNATURE), "the manifest signature is invalid");
        assert_eq!(extended_words(Erc::from_script_exit_code(3)), "the install script exited with code 3");
        assert_eq!(extended_words(Erc::NONE), "no extended result");
        assert_eq!(extended_words(Erc(28)), "error 28 (no space left on device)");
        assert_eq!(extended_words(Erc(0x4010_0005)), "extension content downloader error: component 1, value 0x5");
        assert_eq!(extended_words(Erc(0xE000_0001)), "facility E error: component 0, value 0x1");
    }
}
