"""Answer extraction and scoring for GSM8K and MATH-500: a DMax-compatible lenient score and a strict one.

Why two scores. The DMax paper's accuracies come from two post-processing scripts of the official repository
(czg1225/DMax, commit 82bc29ec; its README says ``python val_gsm8k.py`` / ``python val_math.py``
"postprocess and calculate accuracy"): ``dInfer/evaluations/val_gsm8k.py`` and
``dInfer/evaluations/val_math.py``. They are deliberately lenient -- several candidate answers are pulled out
of the generation and any one may match -- so a chain of thought that states the right number and then
wanders off still counts. To compare with the paper we reproduce that rule (`MathScore.dmax_compatible`);
to measure what a user of the model would get we also report a strict score (`MathScore.strict`).

DMax-compatible rules (re-implemented, not copied; the regexes and word lists are the same facts):

* GSM8K (``val_gsm8k.py``: ``extract_llm_final_answer_candidates``, ``compare_candidates``). Candidates, in
  order: the last number of each of the last three explicit answer spans (``####``, ``<answer>``,
  ``Final Answer:``, ``The final answer is``, a line starting ``Answer:``), newest first; the last number
  of the last ``\\boxed``/``\\fbox``; the last number of each of the last five non-empty lines, newest
  first; the last number of the last eight lines. Snippets that look "unstable" (words such as *wrong*,
  *stuck*, two *wait*) are skipped, and a whole response that looks unstable with no clean answer marker
  in its last 250 characters has no candidates. Numbers are canonicalised (commas, ``$``, ``%`` and
  wrappers dropped; ``18.00`` -> ``18``; ``6/4`` -> ``3/2``). Correct iff the gold number equals one of
  the *first two* candidates. "The answer is 42" is not an answer span there; it counts through the
  line candidates.
* MATH-500 (``val_math.py``: ``extract_llm_final_answer_candidates``, ``compare_candidates``). Up to ten
  prediction candidates: the last answer-pattern match and the last boxed content (each only when fewer
  than 20 letters/digits follow it), the last LaTeX math block of the last 800 characters, the last three
  lines (and the right-hand side of their last ``=``), and the whole response if it has at most 200
  characters. Gold candidates come from the dataset's ``answer`` field the same way. A pair matches by
  (1) normalised exact match (`normalize_math_answer`), then (2) sympy (``simplify(a - b) == 0``), then
  (3) math-verify on three variants of each side (raw, cleaned, cleaned in ``$...$``).

(The lm-eval YAMLs under ``dInfer/evaluations/tasks/`` -- ``gsm8k/gsm8k-llada-mini.yaml``,
``math/minerva_math500.yaml`` -> ``minerva_math_algebra.yaml`` + ``math/utils.py`` -- drive generation, with
the prompts ``"Question: {q}\nLet's think step by step\nAnswer:"`` and ``"{problem}\nLet's think step by
step, and put your final answer within \\boxed{}."``; the README then computes accuracy with the two
scripts above, so the harness's own ``exact_match`` / ``math_verify`` metrics are not reproduced here.)

Strict rules (ours; "final answer only"):

* GSM8K strict: find the last occurrence of ``answer is`` / ``####`` / ``\\boxed`` / ``\\fbox`` (case-
  insensitive). The strict answer is the last number in the text after it -- or, with no marker at all,
  the last number of the whole text. A marker with no number after it gives no answer. Numbers may carry
  a leading ``-`` (not one that follows a digit, as in ``10-5``), ``$`` and thousands commas, which are
  dropped, and may be a simple fraction ``a/b``. Correct iff it equals the gold number exactly as a rational
  number (so ``18.00`` == ``18``, ``6/4`` == ``1.5``), or else math-verify finds them numerically equal
  (its default 6-decimal rounding). Trailing numbers after the answer make it wrong: that is
  the point of strict.
* MATH strict: the content of the last ``\\boxed{}``/``\\fbox{}`` (balanced braces) and nothing else; no
  box -> wrong. Correct iff it equals the gold verbatim (ignoring whitespace) or math-verify's
  ``verify(parse(gold), parse(pred))`` holds with both sides parsed as ``$\\boxed{...}$``.

Where we deviate from DMax, and why:

* Time limits. DMax wraps each example in a SIGALRM limit (5 s GSM8K, 8 s MATH) and scores a timeout as
  wrong. We keep an 8 s cooperative budget per MATH example (`DMAX_MATH_BUDGET_S`, checked between
  comparisons; over budget -> wrong; no symbolic call runs past budget + `GUARD_S`) and limit every single
  sympy / math-verify call to `GUARD_S` instead (a strict check's calls share one `GUARD_S`). Those calls
  -- the only steps that can hang -- run in reusable worker processes that are killed and replaced when a
  call runs over (`timeout.WorkerPool`), so the limit holds on any thread of any process and also stops C
  code; math-verify's own ``signal.alarm`` timeouts are switched off. Extraction (regexes, string
  handling) runs in the caller without a limit.
* Pathological inputs. ``sympify("10**10**10")`` computes for minutes inside C (DMax's per-example alarm
  does not stop it). A worker would be killed after `GUARD_S`, but each kill wastes that time and a worker
  restart, so candidates with an exponent tower, an exponent of five or more digits, a factorial of a 5+
  digit number, or over 2000 characters are never handed to sympy or math-verify
  (`pathological.is_pathological`); they can still match as strings.
* ``sympify`` evaluates Python; DMax feeds it model text. We only sympify text made of digits, letters,
  spaces and ``+-*/^().,`` with no ``__`` and no attribute access (``.name``).
* The sympy step is DMax's: sympy's LaTeX parser for LaTeX-looking text, else ``sympify``. That parser
  needs ``antlr4-python3-runtime`` 4.11 (DMax's lm-eval math extra pins it; this project's environment has
  4.9.3, so here it fails and, exactly as in DMax then, only plain-ASCII candidates reach sympy; math-verify
  covers the rest).
* An exception anywhere scores ``False`` (DMax: ``example_error`` -> wrong), and the gold is passed as a
  string (GSM8K: a number, or a whole ``answer`` field; MATH-500: the ``answer`` field), not a row.

Modules, one job each: `timeout` (time-limited calls in worker processes), `latex` (braces and boxes),
`candidates` (ordered, each once), `pathological` (what symbolic code never sees), `verify` (sympy /
math-verify equality under the limit), `math_normalize` (MATH's canonical string), `gsm8k_rules` and `math_rules`
(the rules above), `score` (the two scorers). A score depends only on its arguments, except that a comparison
cut off by a time limit is False. sympy and math-verify are imported only inside the worker processes, so
importing this package is cheap. It defines no `Task`.
"""

from dmax_core.tasks.answers.gsm8k_rules import gsm8k_gold
from dmax_core.tasks.answers.latex import last_boxed
from dmax_core.tasks.answers.math_normalize import normalize_math_answer
from dmax_core.tasks.answers.math_rules import DMAX_MATH_BUDGET_S
from dmax_core.tasks.answers.score import MathScore, score_gsm8k, score_math
from dmax_core.tasks.answers.verify import GUARD_S

__all__ = [
    "DMAX_MATH_BUDGET_S",
    "GUARD_S",
    "MathScore",
    "gsm8k_gold",
    "last_boxed",
    "normalize_math_answer",
    "score_gsm8k",
    "score_math",
]
