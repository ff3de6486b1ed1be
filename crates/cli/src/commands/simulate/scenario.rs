//! The scenario of a simulation (TOML) and the seeded plan it gives: which device is of which
//! class and what happens to it. Pure: the same seed, device count and scenario always give the
//! same plan, so the same devices fail on every run.

use std::time::Duration;

use anyhow::{Result, bail};
use serde::Deserialize;

/// Result code the simulated handlers report for a failed phase unless the scenario says.
pub(super) const DEFAULT_FAILURE_RESULT_CODE: i32 = 0;
/// duhub simulator: a simulated download failure (the default extended result code).
pub(super) const DEFAULT_DOWNLOAD_ERC: i64 = 0x3030_0F11;
/// duhub simulator: a simulated install failure.
pub(super) const DEFAULT_INSTALL_ERC: i64 = 0x3030_0F12;
/// duhub simulator: a simulated apply failure.
pub(super) const DEFAULT_APPLY_ERC: i64 = 0x3030_0F13;

/// A scenario file. Fractions are of the whole fleet; each fate is given to exactly
/// ⌊devices × fraction⌋ devices chosen by the seed, and a device has one fate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Scenario {
    /// Seed of every random choice (`--seed` wins).
    pub(super) seed: Option<u64>,
    /// Devices that need a file with the same SHA-256 reuse one download (per simulator run)
    /// instead of each downloading it.
    #[serde(default)]
    pub(super) shared_downloads: bool,
    /// Device classes and their share of the fleet (default: one class from `--manufacturer`
    /// and `--model`).
    #[serde(default)]
    pub(super) population: Vec<Class>,
    /// The download phase.
    #[serde(default)]
    pub(super) download: Phase,
    /// The install phase.
    #[serde(default)]
    pub(super) install: Phase,
    /// The apply phase.
    #[serde(default)]
    pub(super) apply: Phase,
    /// Fraction whose apply asks for a reboot (706): the agent stops, stays down for
    /// `reboot_ms`, starts again and completes the deployment.
    #[serde(default)]
    pub(super) reboot: f64,
    /// Fraction whose apply asks for an agent restart (707).
    #[serde(default)]
    pub(super) restart: f64,
    /// How long a reboot or agent restart keeps the device down (milliseconds, range).
    #[serde(default = "default_reboot_ms")]
    pub(super) reboot_ms: [u64; 2],
    /// Fraction that drops offline halfway through its first download and reconnects (and
    /// resumes the download with a Range request) after `offline_ms`.
    #[serde(default)]
    pub(super) offline_during_download: f64,
    /// How long those devices stay offline (milliseconds, range).
    #[serde(default = "default_offline_ms")]
    pub(super) offline_ms: [u64; 2],
    /// Fraction that never connects (their devices exist and are in the group).
    #[serde(default)]
    pub(super) never_connect: f64,
}

/// A device class of the population.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Class {
    pub(super) manufacturer: String,
    pub(super) model: String,
    /// Share of the fleet; shares are normalised over the population.
    pub(super) fraction: f64,
}

/// One phase of a step: how long it takes, and which fraction fails with which codes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Phase {
    /// Latency range in milliseconds, `[min, max]`, drawn per device.
    #[serde(default)]
    pub(super) latency_ms: [u64; 2],
    /// Fraction of the fleet that fails this phase.
    #[serde(default)]
    pub(super) fail: f64,
    /// `resultCode` of the failure.
    pub(super) result_code: Option<i32>,
    /// `extendedResultCode` of the failure.
    pub(super) extended_result_code: Option<i64>,
}

impl Default for Phase {
    fn default() -> Self {
        Self { latency_ms: [0, 0], fail: 0.0, result_code: None, extended_result_code: None }
    }
}

fn default_reboot_ms() -> [u64; 2] {
    [1000, 3000]
}

fn default_offline_ms() -> [u64; 2] {
    [1000, 3000]
}

/// The three phases of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PhaseName {
    Download,
    Install,
    Apply,
}

/// What happens to one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Installs the update.
    Succeed,
    /// Fails this phase with the scenario's codes.
    Fail(PhaseName),
    /// Its apply asks for a reboot, then it succeeds.
    Reboot,
    /// Its apply asks for an agent restart, then it succeeds.
    Restart,
    /// Goes offline during its download, comes back, succeeds.
    Offline,
    /// Never connects.
    NeverConnect,
}

impl Fate {
    /// The terminal state the service should end up showing: `Some(true)` succeeded,
    /// `Some(false)` failed, `None` not part of the deployment (never connected).
    pub(super) fn expected_success(self) -> Option<bool> {
        match self {
            Self::Fail(_) => Some(false),
            Self::NeverConnect => None,
            Self::Succeed | Self::Reboot | Self::Restart | Self::Offline => Some(true),
        }
    }
}

/// The plan of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct DevicePlan {
    /// Index of its class in [`Scenario::classes`].
    pub(super) class: usize,
    pub(super) fate: Fate,
    /// Seed of its own draws (latencies).
    pub(super) seed: u64,
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub(super) fn parse(text: &str) -> Result<Self> {
        let scenario: Self = toml::from_str(text)?;
        scenario.check()?;
        Ok(scenario)
    }

    fn check(&self) -> Result<()> {
        let fractions = [
            ("download.fail", self.download.fail),
            ("install.fail", self.install.fail),
            ("apply.fail", self.apply.fail),
            ("reboot", self.reboot),
            ("restart", self.restart),
            ("offline_during_download", self.offline_during_download),
            ("never_connect", self.never_connect),
        ];
        for (name, fraction) in fractions {
            if !(0.0..=1.0).contains(&fraction) {
                bail!("{name} = {fraction} is not a fraction between 0 and 1");
            }
        }
        let total: f64 = fractions.iter().map(|(_, f)| f).sum();
        if total > 1.0 + 1e-9 {
            bail!("the fates' fractions add up to {total}, more than the whole fleet (a device has one fate)");
        }
        for class in &self.population {
            if !(class.fraction > 0.0 && class.fraction.is_finite()) {
                bail!("population {}/{}: fraction must be positive", class.manufacturer, class.model);
            }
            if class.manufacturer.is_empty() || class.model.is_empty() {
                bail!("population entries need a manufacturer and a model");
            }
        }
        for (name, phase) in [("download", &self.download), ("install", &self.install), ("apply", &self.apply)] {
            if phase.latency_ms[0] > phase.latency_ms[1] {
                bail!("{name}.latency_ms = {:?}: the minimum is above the maximum", phase.latency_ms);
            }
            if let Some(code) = phase.extended_result_code
                && i32::try_from(code).is_err()
                && u32::try_from(code).is_err()
            {
                bail!("{name}.extended_result_code {code} does not fit in 32 bits");
            }
        }
        for (name, range) in [("reboot_ms", self.reboot_ms), ("offline_ms", self.offline_ms)] {
            if range[0] > range[1] {
                bail!("{name} = {range:?}: the minimum is above the maximum");
            }
        }
        Ok(())
    }

    /// The phase called `name`.
    pub(super) fn phase(&self, name: PhaseName) -> &Phase {
        match name {
            PhaseName::Download => &self.download,
            PhaseName::Install => &self.install,
            PhaseName::Apply => &self.apply,
        }
    }

    /// The codes a failure of `name` reports.
    pub(super) fn failure_codes(&self, name: PhaseName) -> (i32, i64) {
        let phase = self.phase(name);
        let default_erc = match name {
            PhaseName::Download => DEFAULT_DOWNLOAD_ERC,
            PhaseName::Install => DEFAULT_INSTALL_ERC,
            PhaseName::Apply => DEFAULT_APPLY_ERC,
        };
        (phase.result_code.unwrap_or(DEFAULT_FAILURE_RESULT_CODE), phase.extended_result_code.unwrap_or(default_erc))
    }

    /// The plan of `devices` devices: classes by the population's shares, fates by the
    /// fractions (`fail_count`, from `--fail-percent`, replaces `install.fail`), all chosen with
    /// `seed`.
    pub(super) fn plan(&self, devices: usize, seed: u64, fail_count: Option<usize>) -> Result<Vec<DevicePlan>> {
        let mut random = SplitMix64::new(seed);
        let count = |fraction: f64| ((devices as f64) * fraction + 1e-9).floor() as usize;
        // Classes: shares of a seeded permutation.
        let mut classes = vec![0usize; devices];
        if !self.population.is_empty() {
            let total: f64 = self.population.iter().map(|c| c.fraction).sum();
            let order = random.permutation(devices);
            let mut next = 0;
            for (index, class) in self.population.iter().enumerate() {
                let share =
                    if index + 1 == self.population.len() { devices - next } else { count(class.fraction / total) };
                for &device in order.iter().skip(next).take(share) {
                    classes[device] = index;
                }
                next = (next + share).min(devices);
            }
        }
        // Fates: consecutive blocks of another seeded permutation.
        let install_fail = fail_count.unwrap_or_else(|| count(self.install.fail));
        let blocks = [
            (Fate::NeverConnect, count(self.never_connect)),
            (Fate::Fail(PhaseName::Download), count(self.download.fail)),
            (Fate::Fail(PhaseName::Install), install_fail),
            (Fate::Fail(PhaseName::Apply), count(self.apply.fail)),
            (Fate::Reboot, count(self.reboot)),
            (Fate::Restart, count(self.restart)),
            (Fate::Offline, count(self.offline_during_download)),
        ];
        let assigned: usize = blocks.iter().map(|(_, n)| n).sum();
        if assigned > devices {
            bail!("the scenario gives {assigned} devices a fate, but there are {devices}");
        }
        let mut fates = vec![Fate::Succeed; devices];
        let order = random.permutation(devices);
        let mut next = 0;
        for (fate, n) in blocks {
            for &device in &order[next..next + n] {
                fates[device] = fate;
            }
            next += n;
        }
        Ok((0..devices)
            .map(|device| DevicePlan { class: classes[device], fate: fates[device], seed: random.next_u64() })
            .collect())
    }
}

/// A draw from `[min, max]` milliseconds.
pub(super) fn draw(random: &mut SplitMix64, range: [u64; 2]) -> Duration {
    let [min, max] = range;
    let span = max.saturating_sub(min);
    let offset = if span == 0 { 0 } else { random.next_u64() % (span + 1) };
    Duration::from_millis(min + offset)
}

/// SplitMix64: a small seeded generator whose sequence never changes across versions (so a
/// seed names the same plan forever).
#[derive(Debug, Clone)]
pub(super) struct SplitMix64(u64);

impl SplitMix64 {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A permutation of `0..n` (Fisher–Yates).
    fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut items: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
        items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_count_is_exact_and_the_seed_picks_the_same_devices() {
        let scenario = Scenario::default();
        let failed = |seed| -> Vec<usize> {
            let plan = scenario.plan(200, seed, Some(20)).unwrap();
            (0..200).filter(|&i| plan[i].fate == Fate::Fail(PhaseName::Install)).collect()
        };
        assert_eq!(failed(7).len(), 20);
        assert_eq!(failed(7), failed(7));
        assert_ne!(failed(7), failed(8));
    }

    #[test]
    fn population_shares_and_fates_are_counted_exactly() {
        let scenario = Scenario::parse(
            r#"
            seed = 3
            reboot = 0.1
            restart = 0.05
            never_connect = 0.02
            offline_during_download = 0.1
            [[population]]
            manufacturer = "contoso"
            model = "a"
            fraction = 3
            [[population]]
            manufacturer = "contoso"
            model = "b"
            fraction = 1
            [install]
            fail = 0.1
            extended_result_code = 0x30300F99
            latency_ms = [10, 20]
            "#,
        )
        .unwrap();
        let plan = scenario.plan(1000, 3, None).unwrap();
        let count = |fate| plan.iter().filter(|p| p.fate == fate).count();
        assert_eq!(count(Fate::Reboot), 100);
        assert_eq!(count(Fate::Restart), 50);
        assert_eq!(count(Fate::NeverConnect), 20);
        assert_eq!(count(Fate::Offline), 100);
        assert_eq!(count(Fate::Fail(PhaseName::Install)), 100);
        assert_eq!(plan.iter().filter(|p| p.class == 0).count(), 750);
        assert_eq!(scenario.failure_codes(PhaseName::Install), (0, 0x3030_0F99));
        assert_eq!(scenario.failure_codes(PhaseName::Apply), (0, DEFAULT_APPLY_ERC));
    }

    #[test]
    fn bad_scenarios_are_refused_with_the_reason() {
        let error = Scenario::parse("reboot = 0.7\nrestart = 0.5").unwrap_err().to_string();
        assert!(error.contains("add up to"), "{error}");
        let error = Scenario::parse("[install]\nlatency_ms = [5, 1]").unwrap_err().to_string();
        assert!(error.contains("minimum"), "{error}");
        assert!(Scenario::parse("unknown = 1").is_err());
    }

    #[test]
    fn draws_stay_in_range() {
        let mut random = SplitMix64::new(1);
        for _ in 0..100 {
            let d = draw(&mut random, [5, 9]);
            assert!((5..=9).contains(&(d.as_millis() as u64)));
        }
        assert_eq!(draw(&mut random, [4, 4]), Duration::from_millis(4));
    }
}
