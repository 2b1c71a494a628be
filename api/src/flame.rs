//! The flamegraph SVG of folded stacks (`root;…;leaf weight` lines), as
//! the agent draws a capture and the plugin draws the merged captures of
//! several pods (`--all`): one look, one set of options.

use inferno::flamegraph::{self, Options, Palette, color::MultiPalette};

/// What the flamegraph says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Titles {
    /// The title.
    pub title: String,
    /// The line under it.
    pub subtitle: String,
    /// The subtitle instead when there is nothing to draw.
    pub empty: String,
    /// What the weights count (`samples`, `nanoseconds`, `calls` …).
    pub count_name: String,
}

/// Draws `folded` (its lines; frames may carry inferno's `_[k]`/`_[j]`
/// annotations). inferno refuses empty input: an empty profile is a valid
/// SVG that says [`Titles::empty`].
pub fn svg(titles: &Titles, folded: &str) -> std::io::Result<Vec<u8>> {
    let mut options = Options::default();
    options.title = titles.title.clone();
    options.subtitle = Some(titles.subtitle.clone());
    options.colors = Palette::Multi(MultiPalette::Java);
    options.count_name = titles.count_name.clone();
    let mut out = Vec::new();
    if folded.lines().all(|l| l.trim().is_empty()) {
        options.subtitle = Some(titles.empty.clone());
        flamegraph::from_lines(&mut options, std::iter::once("no-samples 1"), &mut out)?;
    } else {
        flamegraph::from_lines(&mut options, folded.lines(), &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn titles() -> Titles {
        Titles {
            title: "tracecar: 2 pods".into(),
            subtitle: "merged".into(),
            empty: "nothing ran".into(),
            count_name: "samples".into(),
        }
    }

    #[test]
    fn draws_stacks_and_says_when_there_are_none() {
        let drawn =
            String::from_utf8(svg(&titles(), "pod:a;main;work 3\nmain 1\n").unwrap()).unwrap();
        assert!(
            drawn.contains("pod:a") && drawn.contains("work") && drawn.contains("tracecar: 2 pods")
        );
        let empty = String::from_utf8(svg(&titles(), "").unwrap()).unwrap();
        assert!(empty.contains("nothing ran") && !empty.contains("merged"));
    }
}
