//! Readers for the deployment examples in `config/` that are not TOML: the Kubernetes manifest's
//! embedded config and the systemd unit's directives.

/// The `portcullis.toml` literal block of the ConfigMap in a Kubernetes manifest, unindented.
pub fn kubernetes_config_toml(yaml: &str) -> String {
    const KEY: &str = "portcullis.toml: |\n";
    let start = yaml.find(KEY).expect("ConfigMap holds portcullis.toml") + KEY.len();
    yaml[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect()
}

/// A systemd unit's directives as `(section, key, value)`, in file order; comments and blank
/// lines skipped. Panics on a line that is neither, naming it.
pub fn systemd_directives(unit: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut directives = Vec::new();
    for (n, line) in unit.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("line {}: not a directive: {line}", n + 1));
        assert!(
            !section.is_empty(),
            "line {}: directive before a section",
            n + 1
        );
        directives.push((section.clone(), key.to_owned(), value.to_owned()));
    }
    directives
}
