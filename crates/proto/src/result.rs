//! Result codes and extended result codes, as agents report them in `lastInstallResult`.
//!
//! - [`ResultCode`]: the signed step/workflow outcome (success iff > 0), with a constant for
//!   every code the official agent 1.1.0 uses.
//! - [`ExtendedResultCode`]: the 32-bit detail code, laid out as facility (4 bits) |
//!   component (8 bits) | value (20 bits); [`Facility`] names the facilities.
//! - [`ExtendedResultCodes`]: a root code plus up to [`ExtendedResultCodes::MAX_EXTRA`] extra
//!   codes, the `extendedResultCodes` twin string of `dtmi:azure:iot:deviceUpdate;2`
//!   (`"00000000,A0000FFF"`).
//! - [`InstallResult`]: the three values a step or a workflow ends with.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a code or a list of codes was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultCodeError {
    /// The text held no code at all (or an empty item between commas).
    #[error("empty extended result code")]
    Empty,
    /// An item is not 1 to 8 hexadecimal digits with an optional `0x` prefix.
    #[error("extended result code \"{0}\" is not 1 to 8 hexadecimal digits")]
    NotHex(String),
    /// More extra codes than [`ExtendedResultCodes::MAX_EXTRA`].
    #[error("more than {max} extra extended result codes", max = ExtendedResultCodes::MAX_EXTRA)]
    TooManyExtra,
    /// A numeric code outside both the `i32` and the `u32` ranges.
    #[error("extended result code {0} does not fit in 32 bits")]
    OutOfRange(i64),
}

/// At most this many characters of offending input are quoted in errors.
const QUOTE_LIMIT: usize = 32;

fn quote(text: &str) -> String {
    text.chars().take(QUOTE_LIMIT).collect()
}

// ---------------------------------------------------------------------------------------------
// ResultCode
// ---------------------------------------------------------------------------------------------

/// The `resultCode` of a step or workflow: success iff the value is positive.
///
/// Serialises as a JSON integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResultCode(pub i32);

/// Declares the result code constants and the table behind [`ResultCode::name`].
macro_rules! result_codes {
    ($($(#[$doc:meta])* $name:ident = $value:expr;)*) => {
        impl ResultCode {
            $($(#[$doc])* pub const $name: Self = Self($value);)*

            /// Every named code with its constant name, in ascending order of value.
            pub const KNOWN: &'static [(ResultCode, &'static str)] =
                &[$((Self::$name, stringify!($name)),)*];
        }
    };
}

result_codes! {
    /// -1: the operation was cancelled.
    FAILURE_CANCELLED = -1;
    /// 0: generic failure.
    FAILURE = 0;
    /// 1: generic success (also the `resultCode` of the "deployment in progress" report).
    SUCCESS = 1;
    /// 2: success, but a cached file was not found (full download used).
    SUCCESS_CACHE_MISS = 2;
    /// 100: the agent registered.
    REGISTER = 100;
    /// 200: the agent is idle (startup with a cancelled deployment in the twin).
    IDLE = 200;
    /// 300: the work folder (sandbox) was created.
    SANDBOX_CREATE = 300;
    /// 400: a deployment is in progress.
    DEPLOYMENT_IN_PROGRESS = 400;
    /// 500: download succeeded.
    DOWNLOAD_SUCCESS = 500;
    /// 501: download in progress.
    DOWNLOAD_IN_PROGRESS = 501;
    /// 502: download skipped, the file already exists.
    DOWNLOAD_SKIPPED_FILE_EXISTS = 502;
    /// 503: download skipped, the update is already installed.
    DOWNLOAD_SKIPPED_UPDATE_ALREADY_INSTALLED = 503;
    /// 504: download skipped, no component matches.
    DOWNLOAD_SKIPPED_NO_MATCHING_COMPONENTS = 504;
    /// 520: the download handler produced the file, no download needed.
    DOWNLOAD_HANDLER_SUCCESS_SKIP_DOWNLOAD = 520;
    /// 521: the download handler needs the full file to be downloaded.
    DOWNLOAD_HANDLER_REQUIRED_FULL_DOWNLOAD = 521;
    /// 600: install succeeded.
    INSTALL_SUCCESS = 600;
    /// 601: install in progress.
    INSTALL_IN_PROGRESS = 601;
    /// 603: install skipped, the update is already installed.
    INSTALL_SKIPPED_UPDATE_ALREADY_INSTALLED = 603;
    /// 604: install skipped, no component matches.
    INSTALL_SKIPPED_NO_MATCHING_COMPONENTS = 604;
    /// 605: install needs an immediate reboot.
    INSTALL_REQUIRED_IMMEDIATE_REBOOT = 605;
    /// 606: install needs a reboot.
    INSTALL_REQUIRED_REBOOT = 606;
    /// 607: install needs an immediate agent restart.
    INSTALL_REQUIRED_IMMEDIATE_AGENT_RESTART = 607;
    /// 608: install needs an agent restart.
    INSTALL_REQUIRED_AGENT_RESTART = 608;
    /// 700: apply succeeded; the `resultCode` of a successful deployment.
    APPLY_SUCCESS = 700;
    /// 701: apply in progress.
    APPLY_IN_PROGRESS = 701;
    /// 705: apply needs an immediate reboot.
    APPLY_REQUIRED_IMMEDIATE_REBOOT = 705;
    /// 706: apply needs a reboot.
    APPLY_REQUIRED_REBOOT = 706;
    /// 707: apply needs an immediate agent restart.
    APPLY_REQUIRED_IMMEDIATE_AGENT_RESTART = 707;
    /// 708: apply needs an agent restart.
    APPLY_REQUIRED_AGENT_RESTART = 708;
    /// 800: cancel succeeded.
    CANCEL_SUCCESS = 800;
    /// 801: the handler could not cancel.
    CANCEL_UNABLE_TO_CANCEL = 801;
    /// 900: `IsInstalled`: the update is installed.
    IS_INSTALLED_INSTALLED = 900;
    /// 901: `IsInstalled`: the update is not installed.
    IS_INSTALLED_NOT_INSTALLED = 901;
    /// 1000: backup succeeded.
    BACKUP_SUCCESS = 1000;
    /// 1001: backup is not supported by the handler (counts as success).
    BACKUP_UNSUPPORTED = 1001;
    /// 1002: backup in progress.
    BACKUP_IN_PROGRESS = 1002;
    /// 1100: restore succeeded.
    RESTORE_SUCCESS = 1100;
    /// 1101: restore is not supported by the handler (counts as success).
    RESTORE_UNSUPPORTED = 1101;
    /// 1102: restore in progress.
    RESTORE_IN_PROGRESS = 1102;
    /// 1105: restore needs an immediate reboot.
    RESTORE_REQUIRED_IMMEDIATE_REBOOT = 1105;
    /// 1106: restore needs a reboot.
    RESTORE_REQUIRED_REBOOT = 1106;
    /// 1107: restore needs an immediate agent restart.
    RESTORE_REQUIRED_IMMEDIATE_AGENT_RESTART = 1107;
    /// 1108: restore needs an agent restart.
    RESTORE_REQUIRED_AGENT_RESTART = 1108;
    /// 1200: the root key package step succeeded, the workflow continues.
    ROOTKEY_CONTINUE = 1200;
}

impl ResultCode {
    /// Whether this code means success (the value is positive).
    pub const fn is_success(self) -> bool {
        self.0 > 0
    }

    /// Whether an install, apply or restore result asks for a reboot (x05 or x06).
    pub const fn requires_reboot(self) -> bool {
        matches!(self.0, 605 | 606 | 705 | 706 | 1105 | 1106)
    }

    /// Whether an install, apply or restore result asks for an agent restart (x07 or x08).
    pub const fn requires_agent_restart(self) -> bool {
        matches!(self.0, 607 | 608 | 707 | 708 | 1107 | 1108)
    }

    /// The constant name of a known code (`"APPLY_SUCCESS"`), `None` for other values.
    pub fn name(self) -> Option<&'static str> {
        Self::KNOWN.iter().find(|(code, _)| *code == self).map(|(_, name)| *name)
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<i32> for ResultCode {
    fn from(value: i32) -> Self {
        Self(value)
    }
}

// ---------------------------------------------------------------------------------------------
// Facility
// ---------------------------------------------------------------------------------------------

/// The facility of an extended result code (its top 4 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Facility {
    /// 0: errno values, crypto, plug-in calls, common errors.
    Unknown = 0,
    /// 1: lower layer (platform layer).
    LowerLayer = 1,
    /// 2: upper layer (agent core).
    UpperLayer = 2,
    /// 3: update content (step) handlers.
    ExtensionUpdateContentHandler = 3,
    /// 4: content downloaders.
    ExtensionContentDownloader = 4,
    /// 5: communication provider.
    CommunicationProvider = 5,
    /// 6: log provider.
    LogProvider = 6,
    /// 7: component enumerator.
    ComponentEnumerator = 7,
    /// 8: utilities (update data parser, workflow, root key and URL utilities).
    Utility = 8,
    /// 9: download handlers (e.g. delta).
    DownloadHandler = 9,
    /// 0xA: infrastructure management (root key workflow, JWS manifest validation).
    InfraMgmt = 0xA,
    /// 0xD: Delivery Optimization HRESULTs moved into this facility.
    DeliveryOptimization = 0xD,
}

impl Facility {
    /// Every facility, in ascending order of code.
    pub const ALL: [Facility; 12] = [
        Self::Unknown,
        Self::LowerLayer,
        Self::UpperLayer,
        Self::ExtensionUpdateContentHandler,
        Self::ExtensionContentDownloader,
        Self::CommunicationProvider,
        Self::LogProvider,
        Self::ComponentEnumerator,
        Self::Utility,
        Self::DownloadHandler,
        Self::InfraMgmt,
        Self::DeliveryOptimization,
    ];

    /// The 4-bit facility code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The facility with this code, if it is a named one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|facility| facility.code() == code)
    }

    /// The agent's name of the facility (`"INFRA_MGMT"`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Unknown => "UNKNOWN",
            Self::LowerLayer => "LOWERLAYER",
            Self::UpperLayer => "UPPERLAYER",
            Self::ExtensionUpdateContentHandler => "EXTENSION_UPDATE_CONTENT_HANDLER",
            Self::ExtensionContentDownloader => "EXTENSION_CONTENT_DOWNLOADER",
            Self::CommunicationProvider => "COMMUNICATION_PROVIDER",
            Self::LogProvider => "LOG_PROVIDER",
            Self::ComponentEnumerator => "COMPONENT_ENUMERATOR",
            Self::Utility => "UTILITY",
            Self::DownloadHandler => "DOWNLOAD_HANDLER",
            Self::InfraMgmt => "INFRA_MGMT",
            Self::DeliveryOptimization => "DELIVERY_OPTIMIZATION",
        }
    }
}

impl From<Facility> for u8 {
    fn from(facility: Facility) -> Self {
        facility.code()
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// ---------------------------------------------------------------------------------------------
// ExtendedResultCode
// ---------------------------------------------------------------------------------------------

/// A 32-bit extended result code: facility (4 bits) | component (8 bits) | value (20 bits).
///
/// `Display` gives the twin form, 8 upper-case hex digits (`A0200004`); `FromStr` accepts
/// 1 to 8 hex digits in either case with an optional `0x` prefix. With serde it is a JSON
/// integer, the legacy numeric `extendedResultCode` member: it serialises as the unsigned
/// value and deserialises from any integer in `i32::MIN..=u32::MAX` (negative values are
/// taken as two's complement, as C agents write them).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ExtendedResultCode(pub u32);

const SCRIPT_EXIT_CODE_BASE: u32 = 0x3050_1000;

impl ExtendedResultCode {
    /// No extended result (`00000000`).
    pub const NONE: Self = Self(0);

    /// Update data parser: the action JSON is invalid.
    pub const INVALID_ACTION_JSON: Self = Self(0x8030_0000);
    /// Update data parser: the manifest is unsigned or its signature or hash does not verify.
    pub const MANIFEST_VALIDATION_FAILED: Self = Self(0x8030_0001);
    /// Update data parser: no action.
    pub const NO_ACTION: Self = Self(0x8030_0002);
    /// Update data parser: no update id.
    pub const NO_UPDATE_ID: Self = Self(0x8030_0003);
    /// Update data parser: no update type.
    pub const NO_UPDATE_TYPE: Self = Self(0x8030_0004);
    /// Update data parser: bad update type.
    pub const BAD_UPDATE_TYPE: Self = Self(0x8030_0005);
    /// Update data parser: no installed criteria.
    pub const NO_INSTALLED_CRITERIA: Self = Self(0x8030_0006);
    /// Update data parser: bad `files` or `fileUrls`.
    pub const BAD_FILES_OR_FILE_URLS: Self = Self(0x8030_0007);
    /// Update data parser: no update manifest.
    pub const NO_MANIFEST: Self = Self(0x8030_0008);
    /// Update data parser: bad update manifest.
    pub const BAD_MANIFEST: Self = Self(0x8030_0009);
    /// Update data parser: `manifestVersion` outside 4..=5.
    pub const UNSUPPORTED_MANIFEST_VERSION: Self = Self(0x8030_000A);
    /// Update data parser: the detached manifest file entity is missing.
    pub const MISSING_DETACHED_MANIFEST_ENTITY: Self = Self(0x8030_000B);
    /// Update data parser: bad detached manifest.
    pub const BAD_DETACHED_MANIFEST: Self = Self(0x8030_000C);
    /// Update data parser: the detached manifest download failed.
    pub const DETACHED_MANIFEST_DOWNLOAD_FAILED: Self = Self(0x8030_000D);
    /// Update data parser: the detached manifest file is not valid JSON.
    pub const BAD_DETACHED_MANIFEST_JSON_FILE: Self = Self(0x8030_000E);
    /// Update data parser: the detached manifest file lacks `updateManifest`.
    pub const DETACHED_MANIFEST_MISSING_UPDATE_MANIFEST: Self = Self(0x8030_000F);
    /// Update data parser: bad workflow action (e.g. legacy action 0).
    pub const BAD_WORKFLOW_ACTION: Self = Self(0x8030_0010);
    /// Update data parser: `rootKeyPackageUrl` is missing or empty.
    pub const MISSING_ROOTKEY_PACKAGE_URL: Self = Self(0x8030_0011);

    /// Root key workflow: the root key package is not valid JSON.
    pub const ROOTKEY_PKG_FAIL_JSON_PARSE: Self = Self(0xA000_0001);
    /// Root key workflow: the root key package could not be serialised.
    pub const ROOTKEY_PKG_FAIL_JSON_SERIALIZE: Self = Self(0xA000_0002);
    /// Root key workflow: the root key store folder could not be created.
    pub const ROOTKEY_STORE_PATH_CREATE: Self = Self(0xA000_0003);
    /// Root key workflow: a disabled signing key names an unsupported hash algorithm.
    pub const ROOTKEY_SIGNINGKEY_DISABLE_EVAL_INVALID_HASHALG: Self = Self(0xA000_0004);
    /// Root key workflow: the manifest's signing key is disabled.
    pub const ROOTKEY_SIGNING_KEY_IS_DISABLED: Self = Self(0xA000_0005);
    /// Root key workflow: a production package was given to a test agent.
    pub const ROOTKEY_PROD_PKG_ON_TEST_AGENT: Self = Self(0xA000_0006);
    /// Root key workflow: a test package was given to a production agent.
    pub const ROOTKEY_TEST_PKG_ON_PROD_AGENT: Self = Self(0xA000_0007);
    /// Root key workflow: the stored root key package changed.
    pub const ROOTKEY_PACKAGE_CHANGED: Self = Self(0xA000_0008);
    /// Root key workflow: the root key package is unchanged (reported as an extra code).
    pub const ROOTKEY_PKG_UNCHANGED: Self = Self(0xA000_0FFF);

    /// JWS manifest validation: `BadStructure` (2).
    pub const JWS_BAD_STRUCTURE: Self = Self(0xA020_0002);
    /// JWS manifest validation: `InvalidSignature` (4).
    pub const JWS_INVALID_SIGNATURE: Self = Self(0xA020_0004);
    /// JWS manifest validation: `DisallowedRootKid` (5).
    pub const JWS_DISALLOWED_ROOT_KID: Self = Self(0xA020_0005);
    /// JWS manifest validation: `MissingRootKid` (6).
    pub const JWS_MISSING_ROOT_KID: Self = Self(0xA020_0006);
    /// JWS manifest validation: `InvalidRootKid` (7), also when no root key package is stored.
    pub const JWS_INVALID_ROOT_KID: Self = Self(0xA020_0007);

    /// Script handler: the script reported a failing `resultCode` with extended result 0.
    pub const SCRIPT_FAILURE_WITHOUT_ERC: Self = Self(0x3050_0206);

    /// Builds a code from its parts; bits beyond each part's width are dropped
    /// (facility 4 bits, value 20 bits).
    pub fn new(facility: impl Into<u8>, component: u8, value: u32) -> Self {
        let facility = u32::from(facility.into() & 0xF);
        Self((facility << 28) | (u32::from(component) << 20) | (value & 0xF_FFFF))
    }

    /// The code from a signed 32-bit value (two's complement, as C agents store it).
    pub const fn from_i32(value: i32) -> Self {
        Self(value.cast_unsigned())
    }

    /// The code as a signed 32-bit value (two's complement).
    pub const fn as_i32(self) -> i32 {
        self.0.cast_signed()
    }

    /// The 4-bit facility.
    pub const fn facility(self) -> u8 {
        (self.0 >> 28) as u8
    }

    /// The facility, if it is a named one.
    pub fn known_facility(self) -> Option<Facility> {
        Facility::from_code(self.facility())
    }

    /// The 8-bit component within the facility.
    pub const fn component(self) -> u8 {
        ((self.0 >> 20) & 0xFF) as u8
    }

    /// The 20-bit value.
    pub const fn value(self) -> u32 {
        self.0 & 0xF_FFFF
    }

    /// Whether this is [`ExtendedResultCode::NONE`].
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The code the official agent reports for a JWS validation result (`JWSResult`):
    /// `DisallowedSigningKey` (10) gives [`ExtendedResultCode::ROOTKEY_SIGNING_KEY_IS_DISABLED`],
    /// any other result `r` gives `0xA02000rr`.
    pub const fn from_jws_result(result: u8) -> Self {
        if result == 10 { Self::ROOTKEY_SIGNING_KEY_IS_DISABLED } else { Self(0xA020_0000 | result as u32) }
    }

    /// The code the script handler reports when the script exits with `exit_code`:
    /// `0x30501000 + exit_code`.
    pub const fn from_script_exit_code(exit_code: i32) -> Self {
        Self(SCRIPT_EXIT_CODE_BASE.wrapping_add(exit_code.cast_unsigned()))
    }

    /// The script exit code this code carries, if it is one built by
    /// [`ExtendedResultCode::from_script_exit_code`] from a non-negative exit code.
    pub const fn script_exit_code(self) -> Option<i32> {
        // Same facility (3) and component (5); values 0x1000..=0xFFFFF.
        if self.0 & 0xFFF0_0000 == SCRIPT_EXIT_CODE_BASE & 0xFFF0_0000 && self.value() >= 0x1000 {
            Some((self.value() - 0x1000) as i32)
        } else {
            None
        }
    }
}

impl TryFrom<i64> for ExtendedResultCode {
    type Error = ResultCodeError;

    /// Accepts `i32::MIN..=u32::MAX`; negative values are two's complement.
    fn try_from(value: i64) -> Result<Self, Self::Error> {
        if let Ok(unsigned) = u32::try_from(value) {
            Ok(Self(unsigned))
        } else if let Ok(signed) = i32::try_from(value) {
            Ok(Self::from_i32(signed))
        } else {
            Err(ResultCodeError::OutOfRange(value))
        }
    }
}

impl From<u32> for ExtendedResultCode {
    fn from(value: u32) -> Self {
        Self(value)
    }
}

impl fmt::Display for ExtendedResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl fmt::UpperHex for ExtendedResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::UpperHex::fmt(&self.0, f)
    }
}

impl fmt::LowerHex for ExtendedResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

impl From<ExtendedResultCode> for u32 {
    fn from(code: ExtendedResultCode) -> Self {
        code.0
    }
}

impl fmt::Debug for ExtendedResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExtendedResultCode(0x{:08X})", self.0)
    }
}

impl FromStr for ExtendedResultCode {
    type Err = ResultCodeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ResultCodeError::Empty);
        }
        let digits = trimmed.strip_prefix("0x").or_else(|| trimmed.strip_prefix("0X")).unwrap_or(trimmed);
        if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ResultCodeError::NotHex(quote(trimmed)));
        }
        u32::from_str_radix(digits, 16).map(Self).map_err(|_| ResultCodeError::NotHex(quote(trimmed)))
    }
}

impl Serialize for ExtendedResultCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for ExtendedResultCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        Self::try_from(value).map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// ExtendedResultCodes
// ---------------------------------------------------------------------------------------------

/// A root extended result code plus up to [`ExtendedResultCodes::MAX_EXTRA`] extra codes: the
/// `extendedResultCodes` twin string, `"%08X"` then `",%08X"` per extra code
/// (`"00000000,A0000FFF"`).
///
/// Parsing accepts spaces around items and lower-case digits and refuses anything else.
/// With serde it is that string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ExtendedResultCodes {
    root: ExtendedResultCode,
    extra: Vec<ExtendedResultCode>,
}

impl ExtendedResultCodes {
    /// The most extra codes the agent reports after the root code.
    pub const MAX_EXTRA: usize = 8;

    /// Only a root code.
    pub const fn new(root: ExtendedResultCode) -> Self {
        Self { root, extra: Vec::new() }
    }

    /// The root code (the first one), the one REST APIs call `extendedResultCode`.
    pub const fn root(&self) -> ExtendedResultCode {
        self.root
    }

    /// The extra codes after the root one.
    pub fn extra(&self) -> &[ExtendedResultCode] {
        &self.extra
    }

    /// All codes, the root one first.
    pub fn iter(&self) -> impl Iterator<Item = ExtendedResultCode> + '_ {
        std::iter::once(self.root).chain(self.extra.iter().copied())
    }

    /// Appends an extra code; fails when [`ExtendedResultCodes::MAX_EXTRA`] are already there.
    pub fn push(&mut self, code: ExtendedResultCode) -> Result<(), ResultCodeError> {
        if self.extra.len() >= Self::MAX_EXTRA {
            return Err(ResultCodeError::TooManyExtra);
        }
        self.extra.push(code);
        Ok(())
    }

    /// This list with one more extra code; fails when the list is full.
    pub fn with_extra(mut self, code: ExtendedResultCode) -> Result<Self, ResultCodeError> {
        self.push(code)?;
        Ok(self)
    }
}

impl From<ExtendedResultCode> for ExtendedResultCodes {
    fn from(root: ExtendedResultCode) -> Self {
        Self::new(root)
    }
}

impl fmt::Display for ExtendedResultCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root)?;
        for code in &self.extra {
            write!(f, ",{code}")?;
        }
        Ok(())
    }
}

impl FromStr for ExtendedResultCodes {
    type Err = ResultCodeError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut items = text.split(',');
        let root = items.next().unwrap_or_default().parse()?;
        let mut codes = Self::new(root);
        for item in items {
            codes.push(item.parse()?)?;
        }
        Ok(codes)
    }
}

impl Serialize for ExtendedResultCodes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ExtendedResultCodes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<str>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// ---------------------------------------------------------------------------------------------
// InstallResult
// ---------------------------------------------------------------------------------------------

/// What a step or a whole workflow ends with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallResult {
    /// The outcome; success iff positive.
    pub result_code: ResultCode,
    /// The root extended result code and any extra ones.
    pub extended_result_codes: ExtendedResultCodes,
    /// Free-form details (reported as a string, or `null` when absent).
    pub result_details: Option<String>,
}

impl InstallResult {
    /// A result with a single extended result code and no details.
    pub fn new(result_code: ResultCode, extended_result_code: ExtendedResultCode) -> Self {
        Self {
            result_code,
            extended_result_codes: ExtendedResultCodes::new(extended_result_code),
            result_details: None,
        }
    }

    /// A successful result (`code` should be positive) with extended result 0.
    pub fn success(code: ResultCode) -> Self {
        Self::new(code, ExtendedResultCode::NONE)
    }

    /// A [`ResultCode::FAILURE`] with the given extended result code.
    pub fn failure(extended_result_code: ExtendedResultCode) -> Self {
        Self::new(ResultCode::FAILURE, extended_result_code)
    }

    /// This result with `details` as `resultDetails`.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.result_details = Some(details.into());
        self
    }

    /// Whether the result code means success.
    pub const fn is_success(&self) -> bool {
        self.result_code.is_success()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_code_constants_are_distinct_sorted_and_named() {
        let values: Vec<i32> = ResultCode::KNOWN.iter().map(|(code, _)| code.0).collect();
        assert_eq!(values.len(), 44);
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
        assert_eq!(ResultCode::APPLY_SUCCESS.name(), Some("APPLY_SUCCESS"));
        assert_eq!(ResultCode(-1).name(), Some("FAILURE_CANCELLED"));
        assert_eq!(ResultCode(702).name(), None);
        assert_eq!(ResultCode::ROOTKEY_CONTINUE, ResultCode(1200));
        assert_eq!(ResultCode::DOWNLOAD_HANDLER_REQUIRED_FULL_DOWNLOAD, ResultCode(521));
    }

    #[test]
    fn result_code_success_is_positive() {
        assert!(!ResultCode::FAILURE.is_success());
        assert!(!ResultCode::FAILURE_CANCELLED.is_success());
        assert!(!ResultCode(i32::MIN).is_success());
        assert!(ResultCode::SUCCESS.is_success());
        assert!(ResultCode::APPLY_SUCCESS.is_success());
        assert!(ResultCode::BACKUP_UNSUPPORTED.is_success());
    }

    #[test]
    fn reboot_and_restart_codes() {
        let reboot: Vec<i32> =
            ResultCode::KNOWN.iter().filter(|(c, _)| c.requires_reboot()).map(|(c, _)| c.0).collect();
        assert_eq!(reboot, [605, 606, 705, 706, 1105, 1106]);
        let restart: Vec<i32> =
            ResultCode::KNOWN.iter().filter(|(c, _)| c.requires_agent_restart()).map(|(c, _)| c.0).collect();
        assert_eq!(restart, [607, 608, 707, 708, 1107, 1108]);
    }

    #[test]
    fn erc_layout() {
        let erc = ExtendedResultCode(0xA020_0004);
        assert_eq!((erc.facility(), erc.component(), erc.value()), (0xA, 2, 4));
        assert_eq!(erc.known_facility(), Some(Facility::InfraMgmt));
        assert_eq!(ExtendedResultCode::new(Facility::InfraMgmt, 2, 4), erc);
        assert_eq!(ExtendedResultCode::new(0xA, 2, 4), erc);
        assert_eq!(ExtendedResultCode::new(0x1F, 0xFF, 0xFFF_FFFF), ExtendedResultCode(0xFFFF_FFFF));
        assert_eq!(ExtendedResultCode::new(0x1A, 0, 0x10_0001), ExtendedResultCode(0xA000_0001));
        let parser = ExtendedResultCode::MISSING_ROOTKEY_PACKAGE_URL;
        assert_eq!((parser.facility(), parser.component(), parser.value()), (8, 3, 0x11));
        assert_eq!(parser.known_facility(), Some(Facility::Utility));
        assert_eq!(ExtendedResultCode(0xB000_0000).known_facility(), None);
    }

    #[test]
    fn erc_constants_sit_in_their_facilities() {
        let parser = [
            ExtendedResultCode::INVALID_ACTION_JSON,
            ExtendedResultCode::MANIFEST_VALIDATION_FAILED,
            ExtendedResultCode::NO_ACTION,
            ExtendedResultCode::NO_UPDATE_ID,
            ExtendedResultCode::NO_UPDATE_TYPE,
            ExtendedResultCode::BAD_UPDATE_TYPE,
            ExtendedResultCode::NO_INSTALLED_CRITERIA,
            ExtendedResultCode::BAD_FILES_OR_FILE_URLS,
            ExtendedResultCode::NO_MANIFEST,
            ExtendedResultCode::BAD_MANIFEST,
            ExtendedResultCode::UNSUPPORTED_MANIFEST_VERSION,
            ExtendedResultCode::MISSING_DETACHED_MANIFEST_ENTITY,
            ExtendedResultCode::BAD_DETACHED_MANIFEST,
            ExtendedResultCode::DETACHED_MANIFEST_DOWNLOAD_FAILED,
            ExtendedResultCode::BAD_DETACHED_MANIFEST_JSON_FILE,
            ExtendedResultCode::DETACHED_MANIFEST_MISSING_UPDATE_MANIFEST,
            ExtendedResultCode::BAD_WORKFLOW_ACTION,
            ExtendedResultCode::MISSING_ROOTKEY_PACKAGE_URL,
        ];
        for (i, code) in parser.iter().enumerate() {
            assert_eq!(code.0, 0x8030_0000 + u32::try_from(i).expect("small index"), "{code}");
        }
        let rootkey = [
            ExtendedResultCode::ROOTKEY_PKG_FAIL_JSON_PARSE,
            ExtendedResultCode::ROOTKEY_PKG_FAIL_JSON_SERIALIZE,
            ExtendedResultCode::ROOTKEY_STORE_PATH_CREATE,
            ExtendedResultCode::ROOTKEY_SIGNINGKEY_DISABLE_EVAL_INVALID_HASHALG,
            ExtendedResultCode::ROOTKEY_SIGNING_KEY_IS_DISABLED,
            ExtendedResultCode::ROOTKEY_PROD_PKG_ON_TEST_AGENT,
            ExtendedResultCode::ROOTKEY_TEST_PKG_ON_PROD_AGENT,
            ExtendedResultCode::ROOTKEY_PACKAGE_CHANGED,
        ];
        for (i, code) in rootkey.iter().enumerate() {
            assert_eq!(code.0, 0xA000_0001 + u32::try_from(i).expect("small index"), "{code}");
        }
        assert_eq!(ExtendedResultCode::ROOTKEY_PKG_UNCHANGED.to_string(), "A0000FFF");
    }

    #[test]
    fn erc_formats_as_eight_upper_case_hex_digits() {
        assert_eq!(ExtendedResultCode(0xA020_0004).to_string(), "A0200004");
        assert_eq!(ExtendedResultCode(0).to_string(), "00000000");
        assert_eq!(ExtendedResultCode(0x1234).to_string(), "00001234");
        assert_eq!(ExtendedResultCode(0xdead_beef).to_string(), "DEADBEEF");
        assert_eq!(format!("0x{:08X}", ExtendedResultCode(0xA0_0004)), "0x00A00004");
        assert_eq!(format!("{:#x}", ExtendedResultCode(0xA020_0004)), "0xa0200004");
        assert_eq!(u32::from(ExtendedResultCode(7)), 7);
        assert_eq!(format!("{:?}", ExtendedResultCode(0x3050_0206)), "ExtendedResultCode(0x30500206)");
    }

    #[test]
    fn erc_negative_i32_is_twos_complement() {
        assert_eq!(ExtendedResultCode::from_i32(-1).to_string(), "FFFFFFFF");
        let erc = ExtendedResultCode::from_i32(-2_145_386_495);
        assert_eq!(erc, ExtendedResultCode(0x8020_0001));
        assert_eq!(ExtendedResultCode::from_i32(i32::MIN).to_string(), "80000000");
        assert_eq!(ExtendedResultCode(0xA020_0004).as_i32(), -1_608_515_580);
        assert_eq!(ExtendedResultCode::from_i32(-1_608_515_580), ExtendedResultCode(0xA020_0004));
        assert_eq!(ExtendedResultCode::try_from(-1_i64), Ok(ExtendedResultCode(u32::MAX)));
        assert_eq!(ExtendedResultCode::try_from(4_294_967_295_i64), Ok(ExtendedResultCode(u32::MAX)));
        assert_eq!(ExtendedResultCode::try_from(4_294_967_296_i64), Err(ResultCodeError::OutOfRange(4_294_967_296)));
        assert_eq!(ExtendedResultCode::try_from(-2_147_483_649_i64), Err(ResultCodeError::OutOfRange(-2_147_483_649)));
    }

    #[test]
    fn erc_parses_with_and_without_prefix() {
        for text in ["A0200004", "0xA0200004", "0xa0200004", "0XA0200004", "a0200004", " A0200004 "] {
            assert_eq!(text.parse::<ExtendedResultCode>(), Ok(ExtendedResultCode(0xA020_0004)), "{text}");
        }
        assert_eq!("4D2".parse::<ExtendedResultCode>(), Ok(ExtendedResultCode(1234)));
        assert_eq!("".parse::<ExtendedResultCode>(), Err(ResultCodeError::Empty));
        assert_eq!("  ".parse::<ExtendedResultCode>(), Err(ResultCodeError::Empty));
        for bad in ["0x", "A02000041", "G0200004", "+1", "-1", "0x-1", "A020 0004", "１"] {
            assert!(matches!(bad.parse::<ExtendedResultCode>(), Err(ResultCodeError::NotHex(_))), "{bad}");
        }
    }

    #[test]
    fn erc_errors_quote_at_most_32_characters() {
        let long = "Z".repeat(1000);
        let Err(ResultCodeError::NotHex(quoted)) = long.parse::<ExtendedResultCode>() else {
            panic!("garbage accepted");
        };
        assert_eq!(quoted.len(), 32);
    }

    #[test]
    fn script_and_jws_helpers() {
        assert_eq!(ExtendedResultCode::from_script_exit_code(0), ExtendedResultCode(0x3050_1000));
        assert_eq!(ExtendedResultCode::from_script_exit_code(3), ExtendedResultCode(0x3050_1003));
        assert_eq!(ExtendedResultCode::from_script_exit_code(255).script_exit_code(), Some(255));
        assert_eq!(ExtendedResultCode(0x3050_1000).script_exit_code(), Some(0));
        assert_eq!(ExtendedResultCode::SCRIPT_FAILURE_WITHOUT_ERC.script_exit_code(), None);
        assert_eq!(ExtendedResultCode(0x3040_1003).script_exit_code(), None);
        let script = ExtendedResultCode::SCRIPT_FAILURE_WITHOUT_ERC;
        assert_eq!((script.facility(), script.component(), script.value()), (3, 5, 0x206));
        assert_eq!(ExtendedResultCode::from_jws_result(2), ExtendedResultCode::JWS_BAD_STRUCTURE);
        assert_eq!(ExtendedResultCode::from_jws_result(4), ExtendedResultCode::JWS_INVALID_SIGNATURE);
        assert_eq!(ExtendedResultCode::from_jws_result(7), ExtendedResultCode::JWS_INVALID_ROOT_KID);
        assert_eq!(ExtendedResultCode::from_jws_result(13), ExtendedResultCode(0xA020_000D));
        assert_eq!(ExtendedResultCode::from_jws_result(10), ExtendedResultCode::ROOTKEY_SIGNING_KEY_IS_DISABLED);
    }

    #[test]
    fn facility_codes_and_names() {
        let names: Vec<(u8, &str)> = Facility::ALL.iter().map(|f| (f.code(), f.name())).collect();
        assert_eq!(
            names,
            [
                (0, "UNKNOWN"),
                (1, "LOWERLAYER"),
                (2, "UPPERLAYER"),
                (3, "EXTENSION_UPDATE_CONTENT_HANDLER"),
                (4, "EXTENSION_CONTENT_DOWNLOADER"),
                (5, "COMMUNICATION_PROVIDER"),
                (6, "LOG_PROVIDER"),
                (7, "COMPONENT_ENUMERATOR"),
                (8, "UTILITY"),
                (9, "DOWNLOAD_HANDLER"),
                (0xA, "INFRA_MGMT"),
                (0xD, "DELIVERY_OPTIMIZATION"),
            ]
        );
        for facility in Facility::ALL {
            assert_eq!(Facility::from_code(facility.code()), Some(facility));
        }
        for missing in [0xB, 0xC, 0xE, 0xF, 0x10] {
            assert_eq!(Facility::from_code(missing), None);
        }
        assert_eq!(Facility::DeliveryOptimization.to_string(), "DELIVERY_OPTIMIZATION");
    }

    #[test]
    fn codes_list_formats_and_parses() -> Result<(), ResultCodeError> {
        let codes =
            ExtendedResultCodes::new(ExtendedResultCode::NONE).with_extra(ExtendedResultCode::ROOTKEY_PKG_UNCHANGED)?;
        assert_eq!(codes.to_string(), "00000000,A0000FFF");
        assert_eq!("00000000,A0000FFF".parse::<ExtendedResultCodes>()?, codes);
        assert_eq!(" 00000000 , a0000fff ".parse::<ExtendedResultCodes>()?, codes);
        assert_eq!("0x0,0xA0000FFF".parse::<ExtendedResultCodes>()?, codes);
        assert_eq!(codes.root(), ExtendedResultCode::NONE);
        assert_eq!(codes.extra(), [ExtendedResultCode::ROOTKEY_PKG_UNCHANGED]);
        assert_eq!(codes.iter().count(), 2);
        let single: ExtendedResultCodes = "A0200007".parse()?;
        assert_eq!(single.root(), ExtendedResultCode::JWS_INVALID_ROOT_KID);
        assert!(single.extra().is_empty());
        assert_eq!(single.to_string(), "A0200007");
        Ok(())
    }

    #[test]
    fn codes_list_refuses_garbage() {
        assert_eq!("".parse::<ExtendedResultCodes>(), Err(ResultCodeError::Empty));
        assert_eq!("00000000,".parse::<ExtendedResultCodes>(), Err(ResultCodeError::Empty));
        assert_eq!(",00000000".parse::<ExtendedResultCodes>(), Err(ResultCodeError::Empty));
        assert_eq!("0,,1".parse::<ExtendedResultCodes>(), Err(ResultCodeError::Empty));
        assert!(matches!("0;1".parse::<ExtendedResultCodes>(), Err(ResultCodeError::NotHex(_))));
        assert!(matches!("ok".parse::<ExtendedResultCodes>(), Err(ResultCodeError::NotHex(_))));
        assert!(matches!("0 1".parse::<ExtendedResultCodes>(), Err(ResultCodeError::NotHex(_))));
    }

    #[test]
    fn codes_list_holds_at_most_eight_extra() {
        let nine = ["1"; 9].join(",");
        let parsed: Result<ExtendedResultCodes, _> = nine.parse();
        assert_eq!(parsed.map(|c| c.extra().len()), Ok(8));
        let ten = ["1"; 10].join(",");
        assert_eq!(ten.parse::<ExtendedResultCodes>(), Err(ResultCodeError::TooManyExtra));
        let mut codes = ExtendedResultCodes::default();
        for _ in 0..ExtendedResultCodes::MAX_EXTRA {
            assert_eq!(codes.push(ExtendedResultCode(1)), Ok(()));
        }
        assert_eq!(codes.push(ExtendedResultCode(1)), Err(ResultCodeError::TooManyExtra));
    }

    #[test]
    fn serde_forms() -> Result<(), serde_json::Error> {
        let codes: ExtendedResultCodes = serde_json::from_str("\"00000000,A0000FFF\"")?;
        assert_eq!(serde_json::to_string(&codes)?, "\"00000000,A0000FFF\"");
        assert!(serde_json::from_str::<ExtendedResultCodes>("\"zz\"").is_err());
        assert!(serde_json::from_str::<ExtendedResultCodes>("0").is_err());
        let legacy: ExtendedResultCode = serde_json::from_str("-1608515580")?;
        assert_eq!(legacy, ExtendedResultCode::JWS_INVALID_SIGNATURE);
        assert_eq!(serde_json::to_string(&legacy)?, "2686451716");
        assert!(serde_json::from_str::<ExtendedResultCode>("4294967296").is_err());
        assert!(serde_json::from_str::<ExtendedResultCode>("1.5").is_err());
        assert!(serde_json::from_str::<ExtendedResultCode>("\"A0200004\"").is_err());
        let code: ResultCode = serde_json::from_str("700")?;
        assert_eq!(code, ResultCode::APPLY_SUCCESS);
        assert_eq!(serde_json::to_string(&ResultCode::FAILURE_CANCELLED)?, "-1");
        assert!(serde_json::from_str::<ResultCode>("2147483648").is_err());
        Ok(())
    }

    #[test]
    fn install_result_builders() {
        let ok = InstallResult::success(ResultCode::APPLY_SUCCESS);
        assert!(ok.is_success());
        assert_eq!(ok.extended_result_codes.to_string(), "00000000");
        assert_eq!(ok.result_details, None);
        let failed = InstallResult::failure(ExtendedResultCode::from_script_exit_code(2)).with_details("exit 2");
        assert!(!failed.is_success());
        assert_eq!(failed.result_code, ResultCode::FAILURE);
        assert_eq!(failed.extended_result_codes.root(), ExtendedResultCode(0x3050_1002));
        assert_eq!(failed.result_details.as_deref(), Some("exit 2"));
    }
}
