//! Which prompt format a model gets, where a rendered prompt's messages start (the points at
//! which tokenizing piecewise gives the ids tokenizing the whole would), and a generation read
//! by the format's parser as it streams.

use std::ops::ControlFlow;

use corral_prompts::hermes::Hermes;
use corral_prompts::llama31::{Llama31, Style};
use corral_prompts::{Conversation, Format, FormatKind, Message, ParseEvent, StreamParser};

use crate::engine::{Backend, EngineError, GenerateRequest, Generation, ModelInfo, StopReason};

/// Runs `request` while `parser` reads each piece, handing its events to `on_events` as they
/// come (`Break` stops the generation). The end-of-generation token goes through the parser
/// too, then its `finish`. Returns the generation and the text exactly as the model wrote it,
/// that end token included (what the next prompt must hold for the cache to be reused).
///
/// # Errors
/// As [`Backend::generate`].
pub(crate) fn generate_parsed(
    backend: &mut dyn Backend,
    request: &GenerateRequest,
    parser: &mut dyn StreamParser,
    on_events: &mut dyn FnMut(Vec<ParseEvent>) -> ControlFlow<()>,
) -> Result<(Generation, String), EngineError> {
    let generation = backend.generate(request, &mut |piece| on_events(parser.push(piece)))?;
    let mut generated = generation.text.clone();
    if let StopReason::EndOfGeneration(end) = &generation.stop {
        generated.push_str(end);
        let _ = on_events(parser.push(end));
    }
    let _ = on_events(parser.finish());
    Ok((generation, generated))
}

/// The prompt format of the loaded model, chosen once from its GGUF chat template
/// ([`corral_prompts::detect`]): Llama 3.x headers or ChatML (Hermes-style calls).
///
/// # Errors
/// A model with no template, or one of neither family: the message names what it has.
pub fn format_for_model(info: &ModelInfo) -> Result<Box<dyn Format + Send + Sync>, String> {
    format_for_template(&info.name, info.chat_template.as_deref())
}

/// [`format_for_model`] for a model called `name` whose GGUF holds `template`.
///
/// # Errors
/// As [`format_for_model`].
pub fn format_for_template(
    name: &str,
    template: Option<&str>,
) -> Result<Box<dyn Format + Send + Sync>, String> {
    let Some(template) = template else {
        return Err(format!(
            "model {name} has no chat template, so corral cannot tell how it calls tools \
             (use a Llama 3.x or ChatML instruct model)"
        ));
    };
    match corral_prompts::detect(template) {
        // Tools in the system message (the template's `tools_in_user_message=false`), so they
        // stay in the pinned prefix when memory evicts the first turn.
        Some(FormatKind::Llama3) => Ok(Box::new(Llama31 {
            tools_in_user_message: false,
            ..Llama31::new(Style::Template)
        })),
        Some(FormatKind::ChatMl) => Hermes::new(template, "", "<|im_end|>")
            .map(|h| Box::new(h) as Box<dyn Format + Send + Sync>)
            .map_err(|e| format!("model {}: its ChatML template does not compile: {e}", name)),
        None => {
            let head: String = template.chars().take(80).collect();
            Err(format!(
                "model {name}'s chat template is neither Llama 3.x nor ChatML, so corral cannot \
                 tell how it calls tools (it starts: {head:?})"
            ))
        }
    }
}

/// Where messages start in `rendered`: where the format's rendering of the system message
/// alone ends (the pinned prefix), and after each end-of-turn token outside plain-marked text.
/// Tokenizing at these offsets gives the ids tokenizing the whole would.
pub(crate) fn message_starts(
    format: &dyn Format,
    marked: &Conversation,
    rendered: &str,
) -> Vec<usize> {
    let mut starts = Vec::new();
    let system = usize::from(matches!(
        marked.messages.first(),
        Some(Message::System { .. })
    ));
    let head = Conversation {
        messages: marked.messages[..system].to_vec(),
        tools: marked.tools.clone(),
        builtin_tools: marked.builtin_tools.clone(),
    };
    if let Ok(head) = format.render(&head, false) {
        if !head.is_empty() && rendered.len() > head.len() && rendered.starts_with(&head) {
            starts.push(head.len());
        }
    }
    let ends = format.stop_tokens();
    let mut depth = 0usize;
    for (i, c) in rendered.char_indices() {
        match c {
            corral_prompts::plain::OPEN => depth += 1,
            corral_prompts::plain::CLOSE => depth = depth.saturating_sub(1),
            '<' if depth == 0 => {
                if let Some(t) = ends.iter().find(|t| rendered[i..].starts_with(**t)) {
                    starts.push(i + t.len());
                }
            }
            _ => {}
        }
    }
    starts.sort_unstable();
    starts.dedup();
    starts
}
