"""Mutation testing (mutmut 3) of the modules whose arithmetic decides a number: which mutants the tests kill.

A copy of the working tree is made in a temporary folder (the project itself is not touched), mutmut is
configured there to mutate only the modules below and to run the unit tier (the tier mutmut can fork per mutant;
it runs, for each mutant, the tests that reach the mutated function), and its verdicts are read back from the
`.meta` files it writes. A module's score is killed / (killed + survived) over the mutants the tests reach
("no tests" are listed apart: code no unit test calls). Not in CI (minutes of CPU).

    pip install mutmut==3.8.1
    python benchmarks/bench_mutation.py                    # all modules → results/mutation.json
    python benchmarks/bench_mutation.py --module core/precision.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from _common import ROOT, SHARED, save, work_dir

MODULES = ("engine/batching.py", "analysis/agreement.py", "core/precision.py", "analysis/knn.py", "analysis/search.py",
           "analysis/ood.py")
# mutmut's exit codes (mutmut.stats.status_by_exit_code)
STATUS = {1: "killed", 3: "killed", -24: "timeout", 24: "timeout", 36: "timeout", 0: "survived", 5: "no tests",
          33: "no tests", 34: "skipped", 35: "suspicious", 37: "caught by type check", -11: "segfault",
          -9: "killed (by the OS)", 152: "timeout"}
TARGET = 0.90


def copy_tree(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    for name in filter(None, files):
        if name.startswith("benchmarks/results") and not name.endswith("demo-readme.json"):  # a test reads it
            continue
        src = ROOT / name
        if src.is_file():
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / name)


def collect(work: Path, modules: list[str]) -> dict:
    """Each module's verdicts from mutmut's .meta files in `work`, the survivors with their diffs (read in this
    process: a `mutmut show` per survivor costs a second each)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    here = os.getcwd()
    os.chdir(work)
    try:
        out = {}
        for m in modules:
            meta = json.loads((work / "mutants" / "lookalike" / f"{m}.meta").read_text())
            by = {k: STATUS.get(v, f"exit {v}") for k, v in meta["exit_code_by_key"].items()}
            counts = Counter(by.values())
            caught = counts["killed"] + counts["timeout"]  # a hang is a detection too (mutmut scores it so)
            reached = caught + counts["survived"]
            diffs = {}
            for key in sorted(k for k, v in by.items() if v == "survived"):
                try:
                    text = get_diff_for_mutant(key, path=Path("lookalike") / m)
                except Exception as exc:  # noqa: BLE001 (a diff that cannot be shown is still a survivor)
                    text = f"(no diff: {exc})"
                diffs[key] = [ln for ln in text.splitlines() if ln[:1] in "+-" and not ln.startswith(("---", "+++"))]
            out[m] = {"mutants": len(by), "counts": dict(counts), "reached": reached,
                      "killed_share": round(caught / reached, 4) if reached else None,
                      "meets_target": bool(reached) and caught / reached >= TARGET, "survivors": diffs}
        return out
    finally:
        os.chdir(here)


# Why a surviving mutant survives: rules over its "+" line (equivalent mutants: the program computes the same
# thing), then by name the mutants that a test written after the run now kills (checked by hand against the
# mutant's diff). Every survivor in results/mutation.json gets one of these, or "unexplained".
EQUIVALENT = [
    (r"dtype=None|, \)\)?$|, \)\.|astype\(None\)|np\.(full|zeros|empty|arange|fromiter|array|ascontiguousarray)\([^)]*, \)",
     "equivalent: numpy infers the same dtype (or count) the code names"),
    (r"block_rows: int = 8193|bank_rows: int = 65537|max_batch: int = 513",
     "equivalent: a block size changes memory and speed, not results (results are tested equal across sizes)"),
    (r"axis=\+1|lexsort\(\([^)]*\), \)|take_along_axis\([^)]*order, \)",
     "equivalent: the last axis of a 2-D array is the default axis"),
    (r"replace=None", "equivalent: numpy reads replace=None as False"),
    (r"kind=None|kind=\"STABLE\"|argsort\([^,]*, \)",
     "equivalent here: the keys sorted are unique (or numpy's sort is stable on them)"),
    (r"k \+ 2", "equivalent: one more candidate (or a larger block) than needed; the exact order is the same"),
    (r"stride=1|strategy=\"longest_first\", \)|enable_truncation\(max_length, (strategy|stride)",
     "equivalent: the truncation argument given is the tokenizers library's default"),
    (r"h5py\.File\(path, \)|string_dtype\(\"UTF-8\"\)|dtype=h5py\.string_dtype\(\"UTF-8\"\)",
     "equivalent: h5py's default mode is read-only; its encoding names are case-insensitive"),
    (r"np\.full\(\(b, m \* width\), (None|\+np\.inf)|np\.where\(has, su\[:, j\], None\)",
     "equivalent: the padding is overwritten column by column before it is read"),
    (r"len\(starts\) (>=|> 1 or)|n - starts\[-1\] (<=|< k \+ 2)",
     "equivalent: a different block split of the same bank; the merged top-k is the same"),
    (r"len\(xu\) >= m|\(len\(xu\) > m\) or True",
     "equivalent: the streamed search of the distinct vectors gives what the all-pairs one gives"),
    (r"\[:161\]", "equivalent at the lengths tested: a 160-character cut"),
    (r"_panics.*(None|True)\)$", "equivalent: a panic does not depend on the type ids asked for"),
    (r"open_h5\(path, (None|InputError, None|\"neighbour file\"|InputError, \)|InputError, \"(XX|NEIGH))",
     "equivalent: load_knn turns any error of opening the file into its own one line"),
    (r"fetch \* 3|max\(2, TIE_BUDGET|range\(0, len\(open_tie\), \)|s2\[:, (\+1|-2)\]|np\.round\(sims\[:, -1\], \)|"
     r"last = np\.full\(len\(queries\), (None|\+np\.inf)|s\[:, (\+1|-2)\], fetch",
     "equivalent: the tie is closed later or with more fetched (cost, not result)"),
    (r"base = k (\-|\+ \(exclude_rows is None)|fetch = min\(base \+ 5",
     "equivalent: a different first fetch; ties past it are closed by the next"),
    (r"\(query_rows >= lo\) \||query_rows <= lo \+ len|query_rows - lo, (-2|None)\)|\(queries >= lo\) \||queries <= hi|"
     r"queries - lo, (-2|None)\)|\(rows >= lo\) \||rows <= lo \+ len|rows - lo, (-2|None)\)",
     "equivalent: an out-of-block 'own row' never matches a row of the block"),
    (r"knn_search\(None, (x|q)|index=build_index", "equivalent: the index given is searched; x is unused"),
    (r"\(p\.offsets\[0\] == 0\) and False|p\.offsets\[0\] == 1|parts\[1\]\.type_ids",
     "equivalent: re-basing a part whose offsets start at 0 is a copy; parts share the type-ids kind"),
    (r"if hi >= lo:|keep\[drop\[lo:hi\] - start\] = None",
     "equivalent: an empty drop range keeps every row either way; None assigns False"),
    (r"while i <= len\(a\)|order\[i:j \+ 2\]", "equivalent: the extra step assigns ranks the next group overwrites"),
    (r"best\[0\] = 1\.0|best = np\.full\(n \+ 2|start = np\.zeros\(n \+ 2|\+ 2, dtype=np\.float64\)|"
     r"batch_tokens / lengths",
     "equivalent: a constant shift of every path's cost, or a longer array never read; the cut is the same"),
    (r"getattr\(tokenizer, \"is_fast\", (None|True)\)|getattr\(tokenizer, \"is_fast\", \)",
     "equivalent: every tokenizer lookalike loads has is_fast"),
    (r"truncation=None|return_token_type_ids=None|truncation=False, \)|return_token_type_ids=with_types\)$",
     "equivalent: the argument given is transformers' default for these tokenizers"),
]
KILLED_LATER = {
    "_store_meta": "tests/unit/analysis/test_knn_contract.py::test_a_sampled_search_works_on_every_precision",
    "knn_self_from_disk__mutmut_13": "test_knn_contract.py::test_the_from_disk_search_never_holds_the_store_and_gives_int64_rows",
    "knn_self_from_disk__mutmut_15": "test_knn_contract.py::test_the_from_disk_search_never_holds_the_store_and_gives_int64_rows",
    "knn_self__mutmut_49": "test_knn_contract.py::test_the_from_disk_search_never_holds_the_store_and_gives_int64_rows",
    "knn_self__mutmut_1": "test_knn_contract.py::test_calls_with_the_defaults_use_the_documented_values",
    "knn_self__mutmut_5": "test_knn_contract.py::test_calls_with_the_defaults_use_the_documented_values",
    "knn_sampled__mutmut_1": "test_knn_contract.py::test_calls_with_the_defaults_use_the_documented_values",
    "knn_sampled__mutmut_2": "test_knn_contract.py::test_calls_with_the_defaults_use_the_documented_values",
    "knn_self__mutmut_12": "test_knn_contract.py::test_the_meta_records_the_gpu_choice_actually_used",
    "knn_self__mutmut_120": "test_knn_contract.py::test_the_meta_records_the_gpu_choice_actually_used",
    "knn_self__mutmut_121": "test_knn_contract.py::test_the_meta_records_the_gpu_choice_actually_used",
    "knn_self__mutmut_122": "test_knn_contract.py::test_the_meta_records_the_gpu_choice_actually_used",
    "knn_self__mutmut_123": "test_knn_contract.py::test_the_meta_records_the_gpu_choice_actually_used",
    "knn_sampled__mutmut_65": "test_knn_contract.py::test_the_meta_records_the_gpu_choice_actually_used",
    "knn_sampled__mutmut_61": "test_knn_contract.py::test_sampled_seconds_are_the_elapsed_time",
    "knn_self__mutmut_93": "test_knn_contract.py::test_index_settings_reach_the_index",
    "knn_self_exact__mutmut_8": "test_knn_contract.py::test_distinct_vectors_and_few_distinct_vectors_take_their_own_paths",
    "knn_self_exact__mutmut_11": "test_knn_contract.py::test_distinct_vectors_and_few_distinct_vectors_take_their_own_paths",
    "knn_self_exact__mutmut_14": "test_knn_contract.py::test_distinct_vectors_and_few_distinct_vectors_take_their_own_paths",
    "knn_self_exact__mutmut_15": "test_knn_contract.py::test_distinct_vectors_and_few_distinct_vectors_take_their_own_paths",
    "knn_self_exact__mutmut_16": "test_knn_contract.py::test_distinct_vectors_and_few_distinct_vectors_take_their_own_paths",
    "knn_self_exact__mutmut_17": "test_knn_contract.py::test_distinct_vectors_and_few_distinct_vectors_take_their_own_paths",
    "knn_self_exact__mutmut_51": "test_knn_contract.py::test_distinct_vectors_and_few_distinct_vectors_take_their_own_paths",
    "knn_self_exact__mutmut_53": "test_knn_contract.py::test_distinct_vectors_and_few_distinct_vectors_take_their_own_paths",
    "knn_of_rows__mutmut_24": "test_knn_contract.py::test_the_ray_search_gets_the_store_and_the_drawn_rows",
    "load_knn__mutmut_75": "test_knn_contract.py::test_a_neighbour_file_missing_a_dataset_is_refused",
    "load_knn__mutmut_76": "test_knn_contract.py::test_a_neighbour_file_missing_a_dataset_is_refused",
    "load_knn__mutmut_77": "test_knn_contract.py::test_a_neighbour_file_missing_a_dataset_is_refused",
    "load_knn__mutmut_78": "test_knn_contract.py::test_a_neighbour_file_missing_a_dataset_is_refused",
    "KnnResultǁcontent_sha256__mutmut_3": "test_knn_contract.py::test_the_checksum_does_not_depend_on_the_arrays_dtypes",
    "KnnResultǁcontent_sha256__mutmut_5": "test_knn_contract.py::test_the_checksum_does_not_depend_on_the_arrays_dtypes",
    "KnnResultǁcontent_sha256__mutmut_7": "test_knn_contract.py::test_the_checksum_does_not_depend_on_the_arrays_dtypes",
    "KnnResultǁcontent_sha256__mutmut_9": "test_knn_contract.py::test_the_checksum_does_not_depend_on_the_arrays_dtypes",
    "_tokenize_slow__mutmut_35": "test_tokenize_and_cut.py::test_the_slow_tokenizer_flags_only_rows_longer_than_the_limit_and_takes_no_types_when_asked",
    "_tokenize_slow__mutmut_5": "test_tokenize_and_cut.py::test_the_slow_tokenizer_flags_only_rows_longer_than_the_limit_and_takes_no_types_when_asked",
    "panic_text__mutmut_4": "test_tokenize_and_cut.py::test_panic_text_is_its_first_line_cut_to_160",
    "panic_text__mutmut_6": "test_tokenize_and_cut.py::test_panic_text_is_its_first_line_cut_to_160",
    "panic_text__mutmut_7": "test_tokenize_and_cut.py::test_panic_text_is_its_first_line_cut_to_160",
    "run_batched__mutmut_19": "test_tokenize_and_cut.py::test_type_ids_reach_the_model",
    "run_batched__mutmut_23": "test_tokenize_and_cut.py::test_type_ids_reach_the_model",
}


KILLED_LATER.update({
    "knn_search__mutmut_36": "test_search_contract.py::test_query_blocks_cover_every_query",
    "error_agreement__mutmut_43": "test_agreement.py::test_containment_of_an_empty_error_set_is_undefined_not_a_crash",
    "build_index__mutmut_1": "test_search_contract.py::test_build_index_defaults_are_a_flat_index_and_the_seed_0_draw",
    "build_index__mutmut_2": "test_search_contract.py::test_build_index_defaults_are_a_flat_index_and_the_seed_0_draw",
    "build_index__mutmut_6": "test_search_contract.py::test_build_index_defaults_are_a_flat_index_and_the_seed_0_draw",
    "_shared_ids__mutmut_9": "test_ood_contract.py::test_one_shared_id_is_overlap",
    "deep_knn_ood__mutmut_1": "test_ood_contract.py::test_scores_thresholds_and_metrics_are_the_definition",
    "deep_knn_ood__mutmut_274": "test_ood_contract.py::test_scores_thresholds_and_metrics_are_the_definition (every "
                                "val point copied into in-test: one sits on the threshold)",
    "deep_knn_ood__mutmut_107": "test_ood_contract.py::test_a_binary_bank_says_its_distance[ubinary]",
    "deep_knn_ood__mutmut_108": "test_ood_contract.py::test_a_binary_bank_says_its_distance[ubinary]",
    "deep_knn_ood__mutmut_206": "test_ood_contract.py::test_the_ray_search_gets_the_store_the_points_and_the_held_out_rows",
    "is_ood_file__mutmut_8": "test_ood_contract.py::test_a_file_round_trips_and_records_the_method (a non-JSON file)",
})
# survivors judged equivalent one by one (the rules above do not reach their lines)
BY_NAME = {
    "knn_self__mutmut_6": "not killed: the default seed of an approximate index's recall sample (the draw itself is "
                          "tested with a given seed)",
    "knn_self_streamed__mutmut_37": "equivalent on a machine without a GPU (the GPU choice is tested through use_gpu)",
    "knn_self_streamed__mutmut_44": "equivalent on a machine without a GPU (the GPU choice is tested through use_gpu)",
    "knn_self_streamed__mutmut_45": "equivalent: a block size changes memory, not results",
    "_encode__mutmut_5": "equivalent: add_special_tokens=True is the tokenizers library's default",
    "_panics__mutmut_3": "equivalent: a panic does not depend on the type ids asked for",
    "_panics__mutmut_8": "equivalent: a panic does not depend on the type ids asked for",
    "_row_jaccards__mutmut_1": "equivalent: a block size changes memory, not results",
    "knn_jaccards__mutmut_1": "equivalent: a block size changes memory, not results",
    "_sampled_pair__mutmut_78": "equivalent: the Jaccard is symmetric in the two files",
    "_sampled_pair__mutmut_79": "equivalent: the Jaccard is symmetric in the two files",
    "_sampled_pair__mutmut_80": "equivalent: the Jaccard is symmetric in the two files",
    "aligned_neighbours__mutmut_20": "not killed: the wording of a refusal's subject (the refusal itself is tested)",
    "aligned_neighbours__mutmut_24": "not killed: the wording of a refusal's subject (the refusal itself is tested)",
    "aligned_neighbours__mutmut_25": "not killed: the wording of a refusal's subject (the refusal itself is tested)",
    "aligned_neighbours__mutmut_31": "not killed: the wording of a refusal's subject (the refusal itself is tested)",
    "distribution_agreement__mutmut_8": "not killed: the wording of a refusal's subject (the refusal itself is tested)",
    "distribution_agreement__mutmut_12": "not killed: the wording of a refusal's subject (the refusal itself is tested)",
    "distribution_agreement__mutmut_13": "not killed: the wording of a refusal's subject (the refusal itself is tested)",
    "error_agreement__mutmut_1": "equivalent: the initial value is replaced before it is read, or left falsy",
    "calibration_ranges__mutmut_75": "not killed: the ', ...' of a warning naming more than 9 dimensions",
    "quantize__mutmut_24": "equivalent: +128 and -128 are the same modulo 256 in int8",
    "quantize__mutmut_75": "equivalent: +128 and -128 are the same modulo 256 in int8",
    "signs__mutmut_7": "equivalent: +128 and -128 are the same modulo 256 in uint8",
    "quantize__mutmut_3": "equivalent: astype copies (or not) the same values",
    "quantize__mutmut_55": "equivalent: unreachable, every range is non-degenerate before quantising (constant dims widened)",
    "stored_dim__mutmut_8": "not killed: the wording of a refusal (the refusal itself is tested)",
    "knn_self__mutmut_105": "equivalent: a block size changes memory, not results",
    "knn_self_exact__mutmut_78": "equivalent: a block size changes memory, not results",
    "knn_self_exact__mutmut_140": "equivalent: unreachable (k < n is checked first, so every query has k others)",
    "knn_self_exact__mutmut_141": "equivalent: unreachable (k < n is checked first, so every query has k others)",
    "KnnResultǁsave__mutmut_48": "equivalent: h5py infers the vlen string type of an object array of str",
    "_order__mutmut_36": "equivalent: the last axis of a 2-D array is the default axis",
    "knn_search__mutmut_9": "equivalent on a machine without a GPU (the GPU choice is tested through use_gpu)",
    "knn_search__mutmut_11": "equivalent: 'flat' is build_index's default kind",
    "_bank_overlap__mutmut_11": "equivalent: a copy of the bank elsewhere shares its corpus and ids, caught by the next rule",
    "_bank_overlap__mutmut_18": "equivalent: unreachable, an empty store is refused when opened",
    "_bank_overlap__mutmut_21": "equivalent: unreachable, an empty store is refused when opened",
    "_rankdata__mutmut_7": "equivalent: numpy's sort kinds are case-insensitive",
    "_shared_ids__mutmut_19": "equivalent: both sides hold only ids whose digests are shared",
    "deep_knn_ood__mutmut_46": "equivalent: one store's features agree with themselves",
    "kth_distance_scores__mutmut_4": "equivalent: a new index over the same bank gives the same scores",
    "kth_distance_scores__mutmut_9": "equivalent on a machine without a GPU (the GPU choice is tested through use_gpu)",
    "kth_distance_scores__mutmut_11": "equivalent: 'flat' is build_index's default kind",
    "threshold_at_tpr__mutmut_12": "equivalent: float() of the chosen score is the same number",
}


def explain(name: str, diff: list[str]) -> str:
    """Why a survivor survives: a test that kills it now, an equivalence rule, or "unexplained"."""
    import re

    short = name.split(".")[-1].removeprefix("x_").removeprefix("xǁ")
    for key, test in KILLED_LATER.items():
        if short == key or short.startswith(key + "__"):
            return f"killed now by {test}"
    for key, why in BY_NAME.items():
        if short == key:
            return why
    plus = " ".join(ln[1:].strip() for ln in diff if ln.startswith("+"))
    for pattern, why in EQUIVALENT:
        if re.search(pattern, plus):
            return why
    return "unexplained"


def run(modules: list[str], workers: int) -> dict:
    work = work_dir("lookalike-mutation-")
    copy_tree(work)
    with open(work / "setup.cfg", "a") as fh:
        fh.write("\n[mutmut]\nsource_paths = lookalike/\n"
                 "only_mutate =\n" + "".join(f"    lookalike/{m}\n" for m in modules) +
                 "also_copy =\n    benchmarks/\n    README.md\n"  # tests that read the README and its script
                 "pytest_add_cli_args_test_selection = tests/unit\n"
                 "pytest_add_cli_args = -p no:cacheprovider -q\n"
                 "timeout_multiplier = 5.0\n")  # a mutant that hangs the tests is caught in seconds
    # one thread per test process: the timeout is CPU time, which spinning OpenMP threads would inflate into
    # false "timeouts" (detections that are not)
    # every mutant's pytest makes a numbered basetemp; a child mutmut kills on timeout never cleans its own, so
    # they go under the work folder (removed at exit) instead of piling up in /tmp/pytest-of-<user>
    (work / "tmp").mkdir()
    env = {**os.environ, "LOOKALIKE_SHARED_DATA": str(SHARED), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TMPDIR": str(work / "tmp")}
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(workers)], cwd=work,
                       env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"mutmut failed ({r.returncode}): {(r.stdout + r.stderr)[-3000:]}")
    out = collect(work, modules)
    return {"seconds": round(seconds, 1), "modules": out}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--module", action="append", choices=MODULES)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--collect", type=Path, default=None,
                    help="read the verdicts of a finished run's copy (its folder) instead of running mutmut")
    ap.add_argument("--explain", action="store_true",
                    help="only explain the survivors already in results/mutation.json (no run)")
    args = ap.parse_args()
    modules = args.module or list(MODULES)
    if args.explain:
        path = ROOT / "benchmarks" / "results" / "mutation.json"
        data = json.loads(path.read_text())
        for m, r in data["modules"].items():
            r["survivors_explained"] = {k: explain(k, v) for k, v in r["survivors"].items()}
            data["summary"][m]["survivors_by_reason"] = dict(Counter(
                "killed now by a later test" if why.startswith("killed now") else
                "equivalent" if why.startswith("equivalent") else why for why in r["survivors_explained"].values()))
            print(m, data["summary"][m]["survivors_by_reason"])
        path.write_text(json.dumps(data, indent=2) + "\n")
        return
    if args.collect:
        result = {"seconds": None, "modules": collect(args.collect.resolve(), modules)}
    else:
        result = run(modules, args.workers)
    for m, r in result["modules"].items():
        print(f"{m}: {r['counts']} killed {r['killed_share']}")
    import mutmut

    from _common import RESULTS

    earlier = RESULTS / "mutation.json"
    modules_out = result["modules"]
    if args.module and earlier.exists():  # a run of some modules updates theirs and keeps the others'
        kept = json.loads(earlier.read_text()).get("modules", {})
        modules_out = {**kept, **{m: {**r, "run_seconds": result["seconds"]} for m, r in modules_out.items()}}
    for r in modules_out.values():
        r["survivors_explained"] = {k: explain(k, v) for k, v in r["survivors"].items()}
    summary = {m: {"killed_share": r["killed_share"], "meets_target": r["meets_target"], "counts": r["counts"],
                   "survivors_by_reason": dict(Counter(
                       "killed now by a later test" if why.startswith("killed now") else
                       "equivalent" if why.startswith("equivalent") else why
                       for why in r["survivors_explained"].values()))}
               for m, r in modules_out.items()}
    save("mutation", {"tool": f"mutmut {mutmut.__version__}", "tests": "tests/unit (forked per mutant)",
                      "target": f">= {TARGET:.0%} of reached mutants killed per module (timeouts count as killed)",
                      "summary": summary, "seconds": result["seconds"], "modules": modules_out})


if __name__ == "__main__":
    main()
