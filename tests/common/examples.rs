//! Readers for the deployment examples in `config/` that are not TOML: the Kubernetes manifest's
//! embedded config and the systemd unit's directives; and for the Markdown documentation
//! (`README.md`, `docs/`): its fenced code blocks, links and heading anchors.

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

/// The fenced code blocks of a Markdown text whose info string's first word is `lang`, as
/// `(line, body)`: the 1-based line of the opening fence, and the body unindented by the fence's
/// own indentation (a block inside a list item). Panics on a fence never closed, naming its line.
pub fn fenced_blocks(markdown: &str, lang: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    // (line of the opening fence, its indentation, whether it is a `lang` block, body so far)
    let mut open: Option<(usize, usize, bool, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if let Some((start, fence_indent, wanted, mut body)) = open.take() {
            if trimmed.trim_end() == "```" {
                if wanted {
                    blocks.push((start, body));
                }
            } else {
                body.push_str(&line[indent.min(fence_indent)..]);
                body.push('\n');
                open = Some((start, fence_indent, wanted, body));
            }
        } else if let Some(info) = trimmed.strip_prefix("```") {
            let wanted = info.split_whitespace().next() == Some(lang);
            open = Some((n + 1, indent, wanted, String::new()));
        }
    }
    if let Some((start, ..)) = open {
        panic!("line {start}: code fence never closed");
    }
    blocks
}

/// The lines of a Markdown text outside fenced code blocks, as `(1-based line, text)`.
fn prose_lines(markdown: &str) -> Vec<(usize, &str)> {
    let mut in_fence = false;
    let mut lines = Vec::new();
    for (n, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        } else if !in_fence {
            lines.push((n + 1, line));
        }
    }
    lines
}

/// The targets of the inline links (`[text](target)`) outside code blocks, as `(line, target)`.
pub fn link_targets(markdown: &str) -> Vec<(usize, String)> {
    let mut targets = Vec::new();
    for (n, line) in prose_lines(markdown) {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest
                .find(')')
                .unwrap_or_else(|| panic!("line {n}: link target never closed"));
            targets.push((n, rest[..end].to_owned()));
            rest = &rest[end..];
        }
    }
    targets
}

/// The headings of a Markdown text as `(level, anchor)`, with the anchor GitHub gives each: lower
/// case, punctuation dropped, spaces made hyphens, and `-1`, `-2`, ... after a repeated one.
pub fn heading_anchors(markdown: &str) -> Vec<(usize, String)> {
    let mut slugs: Vec<String> = Vec::new();
    let mut anchors = Vec::new();
    for (_, line) in prose_lines(markdown) {
        let hashes = line.len() - line.trim_start_matches('#').len();
        let Some(title) = line[hashes..]
            .strip_prefix(' ')
            .filter(|_| (1..=6).contains(&hashes))
        else {
            continue;
        };
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let repeats = slugs.iter().filter(|s| **s == slug).count();
        let anchor = if repeats == 0 {
            slug.clone()
        } else {
            format!("{slug}-{repeats}")
        };
        anchors.push((hashes, anchor));
        slugs.push(slug);
    }
    anchors
}
