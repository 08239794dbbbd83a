//! What the chat shows of its state: `/tools` (each tool's policy, why one is not offered,
//! where it comes from and what it can touch) and `/stats` (context regions, memory, the last
//! turn).

use super::Chat;
use crate::agent::Agent;
use crate::config::decision_word;

impl Chat<'_> {
    pub(super) fn tools_text(&self) -> String {
        let mut out = String::new();
        if self.tools.registry.specs().next().is_none() {
            return "no tools (see `corral tools list`)\n".into();
        }
        for (spec, _) in self.tools.registry.specs() {
            let name = &spec.name;
            let offered = self.specs.iter().any(|s| &s.name == name);
            let policy = decision_word(self.tools.policy.decide(name));
            let reach = self
                .tools
                .reach
                .get(name)
                .map_or_else(String::new, ToString::to_string);
            let plugin = self.tools.reach.get(name).map_or("", |r| r.plugin.as_str());
            let interpreter = name == corral_tools::code_interpreter::NAME;
            let origin = if interpreter {
                "builtin, CPython in the sandbox with a scratch folder of its own".to_owned()
            } else {
                format!("plugin {plugin}")
            };
            let why_not = if offered {
                ""
            } else if self.args.tools.is_some() {
                "not offered (not named in --tools); "
            } else if interpreter {
                "not offered (name it: --tools code_interpreter,…); "
            } else {
                "not offered (needs a folder: /grant PLUGIN=DIR); "
            };
            out.push_str(&format!(
                "{name:<16} {policy:<6} {why_not}{origin}; can touch: {reach}\n"
            ));
        }
        out
    }

    pub(super) fn stats_text(&self, agent: &Agent<'_>) -> String {
        let mut out = String::new();
        if let Some(memory) = agent.memory() {
            let r = memory.regions;
            let window = memory.settings.window;
            let used = r.pinned + r.summary + r.recent;
            out.push_str(&format!(
                "context: {used} of {window} tokens used ({:.0}%): pinned {}, summary {}, \
                 recent {}, reserve {}, free {}\n",
                100.0 * used as f64 / window.max(1) as f64,
                r.pinned,
                r.summary,
                r.recent,
                r.reserve,
                r.free
            ));
            out.push_str(&format!(
                "memory: {} turn(s) evicted; summary {} chars; language {}\n",
                memory.evicted_turns,
                memory.summary.chars().count(),
                memory
                    .language
                    .current
                    .map_or("not known yet", |l| l.english_name())
            ));
        }
        match self.last {
            Some(t) => out.push_str(&format!(
                "last turn: {} step(s), {} prompt tokens ({} reused from the cache), {} \
                 generated in {:.2} s ({:.1} tokens/s overall)\n",
                t.steps,
                t.prompt_tokens,
                t.reused_tokens,
                t.generated_tokens,
                t.seconds,
                t.generated_tokens as f64 / t.seconds.max(1e-9)
            )),
            None => out.push_str("last turn: none yet\n"),
        }
        out
    }
}
