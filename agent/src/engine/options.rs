//! Options for loading a model into an engine, shared by every backend build.

use std::str::FromStr;

use super::Sampling;

/// The largest context corral accepts (Llama 3.1's 128K window).
pub const MAX_CONTEXT_TOKENS: u32 = 131_072;

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// 16-bit floats (llama.cpp's default).
    #[default]
    F16,
    /// 8-bit blocks: half the memory, needs flash attention for the V cache.
    Q8_0,
}

impl KvType {
    /// Bytes per cached element (per key or value scalar).
    pub fn bytes_per_element(self) -> f64 {
        match self {
            KvType::F16 => 2.0,
            KvType::Q8_0 => 34.0 / 32.0,
        }
    }
}

impl FromStr for KvType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f16" => Ok(KvType::F16),
            "q8_0" => Ok(KvType::Q8_0),
            other => Err(format!("unknown KV cache type `{other}`: use f16 or q8_0")),
        }
    }
}

/// Whether llama.cpp uses flash attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlashAttention {
    /// llama.cpp decides per device (its default).
    #[default]
    Auto,
    /// Always on.
    On,
    /// Always off.
    Off,
}

impl FlashAttention {
    /// `Some(on)` when the mode decides, `None` when llama.cpp chooses per device (`auto`).
    ///
    /// `auto` stays llama.cpp's choice, which is on for the CPU. Off decodes faster deep in a
    /// context on this CPU (llama-bench, SmolLM2-135M, 2 threads, after 2048 tokens: 55.5
    /// tokens/s off vs 16.7 on, prompts 249 vs 231 tokens/s), but its results depend on how
    /// tokens are batched, so a cached prefix no longer gives exactly the tokens a fresh
    /// evaluation would, and the default model's greedy tool calls changed (its calculator
    /// example failed). `--flash-attn off` is there for who wants the speed.
    pub fn resolve(self) -> Option<bool> {
        match self {
            FlashAttention::On => Some(true),
            FlashAttention::Off => Some(false),
            FlashAttention::Auto => None,
        }
    }
}

impl FromStr for FlashAttention {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(FlashAttention::Auto),
            "on" | "true" | "1" => Ok(FlashAttention::On),
            "off" | "false" | "0" => Ok(FlashAttention::Off),
            other => Err(format!(
                "unknown flash-attention mode `{other}`: use on, off or auto"
            )),
        }
    }
}

/// Most conversations one loaded model keeps caches for.
pub const MAX_SEQUENCES: u32 = 64;

/// How to load a model and size its context.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    /// Context window in tokens (`None`: the model's training context, capped so the KV cache
    /// fits in memory).
    pub context_tokens: Option<u32>,
    /// CPU threads for generation and prompt evaluation.
    pub threads: u32,
    /// Logical batch size for prompt evaluation.
    pub batch: u32,
    /// KV cache element type.
    pub kv_type: KvType,
    /// Flash attention mode.
    pub flash_attention: FlashAttention,
    /// Layers to offload to the GPU (needs the `cuda` feature).
    pub gpu_layers: u32,
    /// Show llama.cpp's own log on stderr.
    pub verbose: bool,
    /// Show a progress bar while loading.
    pub show_progress: bool,
    /// Conversations that keep their own KV cache at once (llama.cpp sequences); each gets a
    /// window of `context_tokens`.
    pub sequences: u32,
    /// Accept a context up to [`MAX_CONTEXT_TOKENS`] whatever the model was trained with. For
    /// measuring time and memory at long contexts (`corral bench`): past its training context a
    /// model's output is unreliable.
    pub allow_untrained_context: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            context_tokens: None,
            threads: default_threads(),
            batch: 512,
            kv_type: KvType::F16,
            flash_attention: FlashAttention::Auto,
            gpu_layers: 0,
            verbose: false,
            show_progress: false,
            sequences: 1,
            allow_untrained_context: false,
        }
    }
}

impl EngineOptions {
    /// Checks what can be checked without the model: option combinations llama.cpp would reject
    /// with a less helpful message, and sizes out of range. The context size is checked against
    /// the model's training context when the model is loaded ([`choose_context`]).
    ///
    /// # Errors
    /// The first bad option, saying how to fix it.
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.kv_type == KvType::Q8_0 && self.flash_attention == FlashAttention::Off {
            return Err(OptionError::QuantizedKvNeedsFlashAttention);
        }
        if self.batch == 0 {
            return Err(OptionError::ZeroBatch);
        }
        if self.threads == 0 {
            return Err(OptionError::ZeroThreads);
        }
        if !(1..=MAX_SEQUENCES).contains(&self.sequences) {
            return Err(OptionError::Sequences(self.sequences));
        }
        match self.context_tokens {
            Some(0) => Err(OptionError::ZeroContext),
            Some(requested) if requested > MAX_CONTEXT_TOKENS => {
                Err(OptionError::ContextOverMaximum { requested })
            }
            _ => Ok(()),
        }
    }
}

impl Sampling {
    /// Checks that every value is in range.
    ///
    /// # Errors
    /// The first value out of range.
    pub fn validate(&self) -> Result<(), OptionError> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(OptionError::Temperature(self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(OptionError::TopP(self.top_p));
        }
        if self.top_k < 0 {
            return Err(OptionError::TopK(self.top_k));
        }
        if !(self.repeat_penalty > 0.0 && self.repeat_penalty.is_finite()) {
            return Err(OptionError::RepeatPenalty(self.repeat_penalty));
        }
        Ok(())
    }
}

/// An option that is out of range, conflicts with another, or does not fit the model: always a
/// mistake in what the caller asked for, never a failure of the engine. Messages name the
/// command-line flag that sets the option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    /// A q8_0 KV cache with flash attention forced off.
    #[error("--kv-type q8_0 needs flash attention: drop `--flash-attn off`")]
    QuantizedKvNeedsFlashAttention,
    /// A batch of 0 tokens.
    #[error("--batch-size must be at least 1")]
    ZeroBatch,
    /// 0 threads.
    #[error("--threads must be at least 1")]
    ZeroThreads,
    /// A number of sequences out of range.
    #[error("sequences must be 1 to {MAX_SEQUENCES}, got {0}")]
    Sequences(u32),
    /// A context of 0 tokens.
    #[error("--ctx must be at least 1 token")]
    ZeroContext,
    /// A context over [`MAX_CONTEXT_TOKENS`], whatever the model.
    #[error("--ctx {requested} is larger than corral's maximum ({MAX_CONTEXT_TOKENS} tokens)")]
    ContextOverMaximum {
        /// Tokens asked for.
        requested: u32,
    },
    /// A context over what the model was trained with.
    #[error(
        "--ctx {requested} is larger than this model supports ({supported} tokens, its training \
         context{}): use --ctx {supported} or less",
        capped_note(.capped)
    )]
    ContextOverModel {
        /// Tokens asked for.
        requested: u32,
        /// The most this model takes.
        supported: u32,
        /// Whether `supported` is corral's maximum rather than the training context itself.
        capped: bool,
    },
    /// A negative or non-finite temperature.
    #[error("--temperature must be 0 or more (got {0})")]
    Temperature(f32),
    /// A nucleus mass outside (0, 1].
    #[error("--top-p must be in (0, 1] (got {0})")]
    TopP(f32),
    /// A negative top-k.
    #[error("--top-k must be 0 or more (got {0})")]
    TopK(i32),
    /// A repeat penalty of 0 or less, or not finite.
    #[error("--repeat-penalty must be more than 0 (got {0})")]
    RepeatPenalty(f32),
}

fn capped_note(capped: &bool) -> &'static str {
    if *capped {
        " capped at 131072"
    } else {
        ""
    }
}

/// Threads to use when the user does not say: every core the process may use.
pub fn default_threads() -> u32 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(4)
}

/// Bytes of memory the system reports as available (Linux `MemAvailable`), if known.
pub fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix("MemAvailable:")?;
        let kib: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    })
}

/// Chooses the context size: the user's, checked against the model, or the model's trained
/// context capped so the KV cache takes at most half of the available memory.
///
/// # Errors
/// [`OptionError::ContextOverModel`] when the requested size exceeds what the model supports.
pub fn choose_context(
    requested: Option<u32>,
    trained: u32,
    kv_bytes_per_token: f64,
    available_memory: Option<u64>,
) -> Result<u32, OptionError> {
    let supported = trained.clamp(1, MAX_CONTEXT_TOKENS);
    if let Some(requested) = requested {
        if requested == 0 {
            return Err(OptionError::ZeroContext);
        }
        if requested > supported {
            return Err(OptionError::ContextOverModel {
                requested,
                supported,
                capped: trained > MAX_CONTEXT_TOKENS,
            });
        }
        return Ok(requested);
    }
    let Some(available) = available_memory else {
        return Ok(supported);
    };
    let fits = (available as f64 / 2.0 / kv_bytes_per_token.max(1.0)) as u64;
    let fits = fits.clamp(512, u64::from(supported)) as u32;
    // Round down to a multiple of 256 so the cache uses whole blocks.
    Ok(if fits >= 256 { fits / 256 * 256 } else { fits }.min(supported))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_context_over_training_context_is_refused_with_the_limit() {
        let err = choose_context(Some(16_384), 8_192, 1000.0, None).unwrap_err();
        assert_eq!(
            err,
            OptionError::ContextOverModel {
                requested: 16_384,
                supported: 8_192,
                capped: false
            }
        );
        assert_eq!(
            err.to_string(),
            "--ctx 16384 is larger than this model supports (8192 tokens, its training context): \
             use --ctx 8192 or less"
        );
    }

    #[test]
    fn requested_context_within_limits_is_kept() {
        assert_eq!(choose_context(Some(2048), 8192, 1.0, Some(1)), Ok(2048));
    }

    #[test]
    fn default_context_is_training_context_when_memory_allows() {
        assert_eq!(
            choose_context(None, 8192, 23_040.0, Some(16 << 30)),
            Ok(8192)
        );
    }

    #[test]
    fn default_context_is_capped_by_memory() {
        // 128K trained, 131072 bytes per token, 4 GiB free: half is 2 GiB = 16384 tokens.
        assert_eq!(
            choose_context(None, 131_072, 131_072.0, Some(4 << 30)),
            Ok(16_384)
        );
    }

    #[test]
    fn context_beyond_corral_maximum_is_refused() {
        let err = choose_context(Some(200_000), 1_000_000, 1.0, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--ctx 200000 is larger than this model supports (131072 tokens, its training \
             context capped at 131072): use --ctx 131072 or less"
        );
        let options = EngineOptions {
            context_tokens: Some(200_000),
            ..EngineOptions::default()
        };
        assert_eq!(
            options.validate(),
            Err(OptionError::ContextOverMaximum { requested: 200_000 })
        );
    }

    #[test]
    fn each_bad_option_is_named() {
        let base = EngineOptions::default();
        let cases = [
            (
                EngineOptions {
                    kv_type: KvType::Q8_0,
                    flash_attention: FlashAttention::Off,
                    ..base.clone()
                },
                OptionError::QuantizedKvNeedsFlashAttention,
            ),
            (
                EngineOptions {
                    batch: 0,
                    ..base.clone()
                },
                OptionError::ZeroBatch,
            ),
            (
                EngineOptions {
                    threads: 0,
                    ..base.clone()
                },
                OptionError::ZeroThreads,
            ),
            (
                EngineOptions {
                    context_tokens: Some(0),
                    ..base.clone()
                },
                OptionError::ZeroContext,
            ),
        ];
        for (options, expected) in cases {
            assert_eq!(options.validate(), Err(expected));
        }
        assert_eq!(base.validate(), Ok(()));
        let good = EngineOptions {
            context_tokens: Some(MAX_CONTEXT_TOKENS),
            kv_type: KvType::Q8_0,
            ..base
        };
        assert_eq!(good.validate(), Ok(()));
    }

    #[test]
    fn sampling_values_out_of_range_are_named() {
        let base = Sampling::default();
        let cases = [
            (
                Sampling {
                    temperature: -0.1,
                    ..base.clone()
                },
                "--temperature must be 0 or more (got -0.1)",
            ),
            (
                Sampling {
                    temperature: f32::INFINITY,
                    ..base.clone()
                },
                "--temperature must be 0 or more (got inf)",
            ),
            (
                Sampling {
                    top_p: 0.0,
                    ..base.clone()
                },
                "--top-p must be in (0, 1] (got 0)",
            ),
            (
                Sampling {
                    top_p: 1.5,
                    ..base.clone()
                },
                "--top-p must be in (0, 1] (got 1.5)",
            ),
            (
                Sampling {
                    top_k: -1,
                    ..base.clone()
                },
                "--top-k must be 0 or more (got -1)",
            ),
            (
                Sampling {
                    repeat_penalty: 0.0,
                    ..base.clone()
                },
                "--repeat-penalty must be more than 0 (got 0)",
            ),
            (
                Sampling {
                    repeat_penalty: f32::NAN,
                    ..base.clone()
                },
                "--repeat-penalty must be more than 0 (got NaN)",
            ),
        ];
        for (sampling, message) in cases {
            assert_eq!(sampling.validate().unwrap_err().to_string(), message);
        }
        assert_eq!(base.validate(), Ok(()));
        assert_eq!(Sampling::greedy().validate(), Ok(()));
        let edges = Sampling {
            top_p: 1.0,
            top_k: 0,
            ..base
        };
        assert_eq!(edges.validate(), Ok(()));
    }

    #[test]
    fn kv_type_parses_and_names_bad_values() {
        assert_eq!("q8_0".parse::<KvType>(), Ok(KvType::Q8_0));
        assert!("q4".parse::<KvType>().unwrap_err().contains("f16 or q8_0"));
    }
}
