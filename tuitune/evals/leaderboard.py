"""One leaderboard from Compare votes and judge verdicts: a Bradley–Terry fit on the Elo scale, with bootstrap CIs.

Why Bradley–Terry and not online Elo: online Elo depends on the order the games were played in, so the same
votes can rank models differently; the Bradley–Terry fit (what FastChat moved Chatbot Arena to) uses every
outcome at once and gives one answer. The model: P(a beats b) = 1 / (1 + 10^((R_b − R_a) / 400)), fitted by
maximum likelihood, i.e. logistic regression on the pairwise outcomes, with these choices:

- a tie counts as half a win each way (FastChat counts it once as a win for each side: the same thing);
- a "both bad" vote counts as a tie, as Chatbot Arena counts its "tie (bothbad)": neither answer beat the other;
- a small L2 prior (``PRIOR`` on each model's natural-log strength, like FastChat's regularised logistic
  regression) keeps a model that always wins finite; with the prior the ratings of a group average 1000;
- an outcome between a model and itself says nothing about the ranking and is left out (a note says so);
- models that never met, even through others, fall into separate groups: each group is fitted on its own and
  ranked within itself, because ratings of groups that never met cannot be compared.

Confidence intervals come from the bootstrap: the outcomes are resampled with replacement (``bootstrap``
rounds, seeded, within each group) and refitted; the 95 % interval is the 2.5th–97.5th percentile. The fit
only depends on how many of each (pair, result) there are, so a round draws those counts from a multinomial,
which is the same distribution as resampling the outcomes one by one. numpy (always present: llama-cpp-python
needs it) does the work, imported lazily; without it the same fit runs in pure Python.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuitune.history import HistoryStore

SCALE, BASE, ANCHOR = 400.0, 10.0, 1000.0  # Elo points per factor-of-BASE odds, and a group's mean rating
PRIOR = 0.1  # L2 on natural-log strengths: a Gaussian prior of variance 10 (σ ≈ 550 Elo points)
DEFAULT_BOOTSTRAP, DEFAULT_SEED = 1000, 0
SOURCES = ("votes", "judge")
WINNERS = ("a", "b", "tie")
VOTE_WINNERS = {"a": "a", "b": "b", "tie": "tie", "bad": "tie"}  # history verdict → outcome ("both bad" ties)
_POINTS = SCALE / math.log(BASE)  # natural-log strength → Elo points
STEP_TOLERANCE = 1e-9  # Newton stops when no strength would move more (1e-9 log-odds: ~2e-7 Elo points)


@dataclass(frozen=True)
class Outcome:
    """One pairwise verdict: a Compare vote or a judge's, ``winner`` "a", "b" or "tie"."""

    model_a: str
    model_b: str
    winner: str
    source: str


@dataclass
class Rating:
    """One row of the board; ``group`` numbers the sets of models that were compared (0 = the largest)."""

    rank: int
    model: str
    rating: float
    ci_low: float | None
    ci_high: float | None
    games: int
    wins: int
    losses: int
    ties: int
    group: int = 0


@dataclass
class Leaderboard:
    ratings: list[Rating]
    counts: dict[str, int]  # outcomes used, per source
    bootstrap: int
    seed: int
    groups: int
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "sources": self.counts,
            "outcomes": sum(self.counts.values()),
            "bootstrap": self.bootstrap,
            "seed": self.seed,
            "groups": self.groups,
            "notes": self.notes,
            "models": [asdict(rating) for rating in self.ratings],
        }


# -- sources ---------------------------------------------------------------------------------------
def vote_outcomes(store: HistoryStore) -> list[Outcome]:
    """Compare votes, each pane A against pane B as they were when the vote was cast."""
    return [Outcome(a, b, VOTE_WINNERS[verdict], "votes") for a, b, verdict, _ in store.pairwise_votes()]


def judge_outcomes(store: Any) -> tuple[list[Outcome], int]:
    """The judge's pairwise verdicts of every stored eval run → (outcomes, entries skipped: failed or malformed)."""
    outcomes, skipped = [], 0
    for run in store.runs():
        entries = store.load(run.id).get("pairwise") or []
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or entry.get("failed"):
                skipped += 1
                continue
            a, b, winner = entry.get("model_a"), entry.get("model_b"), entry.get("winner")
            if not (isinstance(a, str) and isinstance(b, str) and winner in WINNERS):
                skipped += 1
                continue
            outcomes.append(Outcome(a, b, winner, "judge"))
    return outcomes, skipped


def open_eval_store() -> Any | None:
    """The stored eval runs, or None when there are none yet (no file is created just to read nothing)."""
    try:
        from tuitune.evals.store import EvalStore, default_eval_store_path
    except ImportError:  # a tuitune without stored runs
        return None
    return EvalStore() if default_eval_store_path().exists() else None


def collect(source: str, history: HistoryStore | None, evals: Any | None) -> tuple[list[Outcome], list[str]]:
    """The outcomes of ``source`` ("votes", "judge" or "both") with notes on what was missing or skipped."""
    outcomes: list[Outcome] = []
    notes: list[str] = []
    if source in ("votes", "both"):
        if history is None:
            notes.append("no Compare votes: there is no history yet (or it is off)")
        else:
            outcomes += vote_outcomes(history)
    if source in ("judge", "both"):
        if evals is None:
            notes.append("no judge verdicts: there are no stored eval runs")
        else:
            judged, skipped = judge_outcomes(evals)
            outcomes += judged
            if skipped:
                notes.append(f"{skipped} judge verdict(s) left out: the judge failed or the entry is malformed")
    return outcomes, notes


def from_stores(source: str, history: HistoryStore | None, bootstrap: int, seed: int) -> Leaderboard:
    """The board of ``source`` from ``history`` (None: no votes) and the default eval store, if there is one."""
    evals = open_eval_store() if source != "votes" else None
    try:
        outcomes, notes = collect(source, history, evals)
    finally:
        if evals is not None:
            evals.close()
    return build(outcomes, bootstrap=bootstrap, seed=seed, notes=notes)


# -- the fit ---------------------------------------------------------------------------------------
def _groups(models: list[str], pairs: Iterable[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the "played each other" graph, largest first (ties by first model name)."""
    parent = list(range(len(models)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in pairs:
        parent[find(i)] = find(j)
    members: dict[int, list[int]] = {}
    for i in range(len(models)):
        members.setdefault(find(i), []).append(i)
    return sorted(members.values(), key=lambda group: (-len(group), models[group[0]]))


def _fit_numpy(k: int, left: Any, right: Any, won: Any, lost: Any, prior: float, start: Any = None) -> Any:
    """Newton's method on the regularised negative log-likelihood, for R resamples at once.

    ``won``/``lost`` (R × P): games the left model of each pair won and lost (a tie is half of each).
    Returns the natural-log strengths, R × k. The objective is strictly convex, so Newton with step halving
    converges from anywhere; ``start`` (the point fit, for the bootstrap) only saves iterations.
    """
    import numpy as np

    rounds = won.shape[0]
    incidence = np.zeros((left.size, k))
    incidence[np.arange(left.size), left] = 1.0
    incidence[np.arange(left.size), right] = -1.0
    games = won + lost
    diagonal = np.arange(k)

    def objective(beta: Any, rows: Any = slice(None)) -> Any:
        d = beta[:, left] - beta[:, right]
        loss = won[rows] * np.logaddexp(0, -d) + lost[rows] * np.logaddexp(0, d)
        return loss.sum(1) + 0.5 * prior * (beta**2).sum(1)

    beta = np.zeros((rounds, k)) if start is None else np.array(np.broadcast_to(start, (rounds, k)))
    value = objective(beta)
    for _ in range(100):
        d = beta[:, left] - beta[:, right]
        p = 0.5 * (1 + np.tanh(d / 2))  # the logistic function, without overflow
        grad = prior * beta - (won - games * p) @ incidence
        weight = games * p * (1 - p)
        hessian = np.zeros((rounds, k, k))  # each pair appears once, so plain assignment builds it
        hessian[:, left, right] = -weight
        hessian[:, right, left] = -weight
        hessian[:, diagonal, diagonal] = weight @ np.abs(incidence) + prior
        step = np.linalg.solve(hessian, grad[..., None])[..., 0]
        if np.abs(step).max() < STEP_TOLERANCE:
            break
        scale = np.ones(rounds)
        candidate = beta - step
        new = objective(candidate)
        for _ in range(40):
            worse = new > value + 1e-12 * np.abs(value)  # a relative slack: rounding must not look like a rise
            if not worse.any():
                break
            scale[worse] /= 2
            candidate[worse] = beta[worse] - scale[worse, None] * step[worse]
            new[worse] = objective(candidate[worse], worse)
        beta, value = candidate, new
    return beta


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (the matrix is positive definite)."""
    n = len(vector)
    rows = [[*row, value] for row, value in zip(matrix, vector, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(rows[r][col]))
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, n):
            factor = rows[r][col] / rows[col][col]
            for c in range(col, n + 1):
                rows[r][c] -= factor * rows[col][c]
    solution = [0.0] * n
    for r in range(n - 1, -1, -1):
        solution[r] = (rows[r][n] - sum(rows[r][c] * solution[c] for c in range(r + 1, n))) / rows[r][r]
    return solution


def _softplus(x: float) -> float:
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def _fit_python(
    k: int, left: list[int], right: list[int], won: list[float], lost: list[float], prior: float
) -> list[float]:
    """The same fit as ``_fit_numpy`` for one set of counts, in pure Python."""

    def objective(beta: list[float]) -> float:
        total = 0.5 * prior * sum(b * b for b in beta)
        for i, j, w, lo in zip(left, right, won, lost, strict=True):
            d = beta[i] - beta[j]
            total += w * _softplus(-d) + lo * _softplus(d)
        return total

    beta = [0.0] * k
    value = objective(beta)
    for _ in range(100):
        grad = [prior * b for b in beta]
        hessian = [[prior if r == c else 0.0 for c in range(k)] for r in range(k)]
        for i, j, w, lo in zip(left, right, won, lost, strict=True):
            p = 0.5 * (1 + math.tanh((beta[i] - beta[j]) / 2))
            residual, weight = w - (w + lo) * p, (w + lo) * p * (1 - p)
            grad[i] -= residual
            grad[j] += residual
            hessian[i][i] += weight
            hessian[j][j] += weight
            hessian[i][j] -= weight
            hessian[j][i] -= weight
        step = _solve(hessian, grad)
        if max(abs(s) for s in step) < STEP_TOLERANCE:
            break
        scale = 1.0
        candidate = [b - s for b, s in zip(beta, step, strict=True)]
        new = objective(candidate)
        while new > value + 1e-12 * abs(value) and scale > 1e-12:
            scale /= 2
            candidate = [b - scale * s for b, s in zip(beta, step, strict=True)]
            new = objective(candidate)
        beta, value = candidate, new
    return beta


def _percentile(values: list[float], q: float) -> float:
    """numpy's default (linear) percentile, so both back ends give the same interval for the same samples."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _fit_group(
    k: int, cells: list[tuple[int, int]], counts: list[list[float]], bootstrap: int, seed: int, use_numpy: bool
) -> tuple[list[float], list[tuple[float, float] | None]]:
    """Point ratings and 95 % intervals for one group. ``counts[p]`` = [left wins, right wins, ties] of pair p."""
    left, right = [i for i, _ in cells], [j for _, j in cells]
    won = [c[0] + c[2] / 2 for c in counts]
    lost = [c[1] + c[2] / 2 for c in counts]
    intervals: list[tuple[float, float] | None] = [None] * k
    if use_numpy:
        import numpy as np

        left_a, right_a = np.array(left), np.array(right)
        point = _fit_numpy(k, left_a, right_a, np.array([won]), np.array([lost]), PRIOR)[0]
        ratings = [ANCHOR + _POINTS * float(b) for b in point]
        if bootstrap:
            flat = np.array(counts, dtype=float).ravel()
            total = int(flat.sum())
            draws = np.random.default_rng(seed).multinomial(total, flat / total, size=bootstrap)
            draws = draws.reshape(bootstrap, -1, 3)
            won_b, lost_b = draws[..., 0] + draws[..., 2] / 2, draws[..., 1] + draws[..., 2] / 2
            chunk = max(1, 2_000_000 // (k * k + len(cells)))  # rounds per batch: bounded memory for many models
            batches = ((won_b[i : i + chunk], lost_b[i : i + chunk]) for i in range(0, bootstrap, chunk))
            fits = np.concatenate([_fit_numpy(k, left_a, right_a, w, lo, PRIOR, point) for w, lo in batches])
            low, high = np.percentile(ANCHOR + _POINTS * fits, [2.5, 97.5], axis=0)
            intervals = [(float(a), float(b)) for a, b in zip(low, high, strict=True)]
        return ratings, intervals
    ratings = [ANCHOR + _POINTS * b for b in _fit_python(k, left, right, won, lost, PRIOR)]
    if bootstrap:
        rng = random.Random(seed)
        categories = [(p, r) for p in range(len(cells)) for r in range(3)]
        weights = [counts[p][r] for p, r in categories]
        samples: list[list[float]] = [[] for _ in range(k)]
        for _ in range(bootstrap):
            drawn = [[0.0, 0.0, 0.0] for _ in cells]
            for p, r in rng.choices(categories, weights=weights, k=int(sum(weights))):
                drawn[p][r] += 1
            fit = _fit_python(k, left, right, [c[0] + c[2] / 2 for c in drawn], [c[1] + c[2] / 2 for c in drawn], PRIOR)
            for i, b in enumerate(fit):
                samples[i].append(ANCHOR + _POINTS * b)
        intervals = [(_percentile(s, 2.5), _percentile(s, 97.5)) for s in samples]
    return ratings, intervals


def _numpy_available() -> bool:
    try:
        import numpy  # noqa: F401
    except ImportError:
        return False
    return True


def build(
    outcomes: Sequence[Outcome],
    bootstrap: int = DEFAULT_BOOTSTRAP,
    seed: int = DEFAULT_SEED,
    notes: Sequence[str] = (),
    use_numpy: bool | None = None,
) -> Leaderboard:
    """Fit the board. Deterministic for a given seed; ``use_numpy`` None picks numpy when it is installed."""
    if bootstrap < 0:
        raise ValueError(f"bootstrap rounds must be 0 or more, not {bootstrap}")
    use_numpy = _numpy_available() if use_numpy is None else use_numpy
    notes = list(notes)
    counts = dict.fromkeys(SOURCES, 0)
    selfplay = 0
    records: dict[str, list[int]] = {}  # model → [wins, losses, ties]
    pair_counts: dict[tuple[str, str], list[float]] = {}  # (first, second) by name → [first wins, second wins, ties]
    for outcome in outcomes:
        if outcome.winner not in WINNERS:
            raise ValueError(f"an outcome's winner must be one of {', '.join(WINNERS)}, not {outcome.winner!r}")
        if outcome.model_a == outcome.model_b:
            selfplay += 1
            continue
        counts[outcome.source] = counts.get(outcome.source, 0) + 1
        first, second = sorted((outcome.model_a, outcome.model_b))
        flipped = first != outcome.model_a
        result = {"a": 1 if flipped else 0, "b": 0 if flipped else 1, "tie": 2}[outcome.winner]
        pair_counts.setdefault((first, second), [0, 0, 0])[result] += 1
        for model, slot in ((first, result), (second, {0: 1, 1: 0, 2: 2}[result])):
            records.setdefault(model, [0, 0, 0])[slot] += 1
    if selfplay:
        notes.append(f"{selfplay} outcome(s) of a model against itself left out: they cannot rank it")
    models = sorted(records)
    index = {model: i for i, model in enumerate(models)}
    groups = _groups(models, ((index[a], index[b]) for a, b in pair_counts))
    if len(groups) > 1:
        notes.append(f"the models fall into {len(groups)} groups that never met: each is rated and ranked on its own")
    ratings: list[Rating] = []
    for number, members in enumerate(groups):
        local = {index_: position for position, index_ in enumerate(members)}
        group_pairs = [(pair, c) for pair, c in pair_counts.items() if index[pair[0]] in local]
        cells = [(local[index[a]], local[index[b]]) for (a, b), _ in group_pairs]
        points, intervals = _fit_group(len(members), cells, [c for _, c in group_pairs], bootstrap, seed, use_numpy)
        rows = []
        for position, model_index in enumerate(members):
            model = models[model_index]
            wins, losses, ties = records[model]
            interval = intervals[position]
            rows.append(Rating(0, model, points[position], interval and interval[0], interval and interval[1],
                               wins + losses + ties, wins, losses, ties, number))  # fmt: skip
        rows.sort(key=lambda row: (-row.rating, row.model))
        for rank, row in enumerate(rows, 1):
            row.rank = rank
        ratings += rows
    return Leaderboard(ratings, counts, bootstrap, seed, len(groups), notes)
