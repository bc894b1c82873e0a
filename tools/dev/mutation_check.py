"""Plant small, realistic bugs one at a time in a scratch copy and report which the tests miss.

    .venv/bin/python tools/dev/mutation_check.py                 # every mutant, its mapped tests
    .venv/bin/python tools/dev/mutation_check.py --only lora      # mutants whose name contains 'lora'
    .venv/bin/python tools/dev/mutation_check.py --full           # the whole suite per mutant (slow)
    .venv/bin/python tools/dev/mutation_check.py --list

Not run by CI (minutes per mutant with --full). Run it before resolving a change to the core modules
(``peft/``, ``backbones/``, ``evaluation/``, ``hooks/``, ``utils/``, ``models/``) and quote the score.

How: the tracked tree (``git ls-files``) is copied once to a temporary folder; each mutant replaces
one exact snippet (it must occur exactly once, else the mutant is reported stale: update the list
when the code moves), runs pytest there with ``PYTHONPATH`` pointing at the copy (the copy's
``mmpeft`` shadows the editable install), and restores the file. A mutant is *caught* when pytest
fails, *survives* when it passes. Exit status 1 when any mutant survives or is stale.
"""
import argparse
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import time
from typing import List, NamedTuple, Sequence

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


class Mutant(NamedTuple):
    name: str
    path: str           # relative to the repository root
    old: str            # exact snippet, must occur once
    new: str
    tests: Sequence[str]  # pytest paths (relative) that should catch it
    why: str = ''


M = Mutant
MUTANTS: List[Mutant] = [
    # ---- peft/attachment.py, peft/checkpointing.py (the one attachment mechanism, issue #11)
    M('attach-disabled-ignored', 'mmpeft/peft/attachment.py',
      'return self.peft.enabled and not (self.mergeable and self.peft.merged_task is not None)',
      'return not (self.mergeable and self.peft.merged_task is not None)',
      ['tests/test_peft/test_method_matrix.py'], 'disabled() still adapts'),
    M('attach-detach-keeps-hooks', 'mmpeft/peft/attachment.py',
      '        for _, handle, _ in self._hooks:\n            handle.remove()\n', '',
      ['tests/test_peft/test_method_matrix.py'], 'detached modules still act'),
    M('attach-merged-hooks-still-act', 'mmpeft/peft/attachment.py',
      '_Gated(self, fn, mergeable=merge_with is not None)', '_Gated(self, fn, mergeable=False)',
      ['tests/test_peft/test_method_matrix.py'], 'a merged LoRA is applied twice'),
    M('ssf-unmerge-order', 'mmpeft/peft/ssf.py',
      '                base.bias.sub_(self.beta[t].to(base.bias.dtype))\n            base.bias.div_(gamma)',
      '                base.bias.div_(gamma)\n            base.bias.sub_(self.beta[t].to(base.bias.dtype))',
      ['tests/test_peft/test_method_matrix.py'], 'unmerge does not give the weights back'),
    M('cp-recompute-without-task', 'mmpeft/peft/checkpointing.py',
      "stack.enter_context(self.peft.switch.use(state['task']))", 'pass',
      ['tests/test_peft/test_method_matrix.py'], 'task-wise modules recompute with no task'),
    M('cp-forgets-outside-params', 'mmpeft/peft/checkpointing.py',
      'return own + [p for p in self.outside if p.requires_grad and id(p) not in seen]', 'return own',
      ['tests/test_peft/test_method_matrix.py'], "Compacter's shared rule gets no gradient"),
    M('cp-rng-not-replayed', 'mmpeft/peft/checkpointing.py',
      "        torch.set_rng_state(state['cpu_rng'])\n", '',
      ['tests/test_peft/test_method_matrix.py'], 'drop path draws other masks in the recompute'),
    M('task-keyword-ignored', 'mmpeft/peft/attachment.py',
      'self.switch._index = self.switch.resolve(task)', 'pass',
      ['tests/test_peft/test_method_matrix.py', 'tests/test_peft/test_taskwise.py'],
      'backbone(x, task=t) runs another task'),
    # ---- peft/
    M('vit-encoder-reads-first-patch', 'mmpeft/backbones/vit_encoder.py',
      'return (last[:, 0],)', 'return (last[:, 1],)',
      ['tests/test_backbones/test_vit_encoder.py'], 'the baseline heads read a patch, not the class token'),
    M('hst-with-cp-ignored', 'mmpeft/backbones/timm_vit.py',
      'if with_cp and torch.is_grad_enabled():', 'if False:',
      ['tests/test_backbones/test_hst_with_cp.py'], 'HSTViT(with_cp=True) keeps every activation'),
    M('attach-later-hook-outside-cp', 'mmpeft/peft/attachment.py',
      '            self._rewrap_checkpoint()  # a later hook must still run inside the checkpointed call',
      '            pass', ['tests/test_peft/test_attachment.py'], 'a hook added later runs twice: wrong gradients'),
    M('detach-leaves-frozen-eval', 'mmpeft/peft/attachment.py',
      '            get_module(self.model, name).train(self.model.training)\n', '',
      ['tests/test_peft/test_attachment.py'], 'detach leaves norms / dropout in eval: not the plain backbone'),
    M('lora-scaling-one', 'mmpeft/peft/lora.py',
      'delta = F.linear(F.linear(self.dropout(x), self.A[t]), self.B[t]) * self.scaling',
      'delta = F.linear(F.linear(self.dropout(x), self.A[t]), self.B[t])',
      ['tests/test_peft/test_lora_reference.py', 'tests/test_peft/test_lora.py'],
      'LoRA trains at the wrong strength'),
    M('lora-alpha-over-rank-swapped', 'mmpeft/peft/lora.py',
      'self.scaling = alpha / rank if alpha is not None else scaling',
      'self.scaling = rank / alpha if alpha is not None else scaling',
      ['tests/test_peft/test_lora_reference.py', 'tests/test_peft/test_lora.py']),
    M('lora-kv-on-q-rows', 'mmpeft/peft/lora.py',
      "i = 'qkv'.index(target)", 'i = 0',
      ['tests/test_peft/test_lora_reference.py', 'tests/test_peft/test_lora.py'],
      'the wrong projection is adapted'),
    M('adapter-scale-ignored', 'mmpeft/peft/adapter.py',
      'return output + self.scale * self(args[0] if self.parallel else output)',
      'return output + self(args[0] if self.parallel else output)',
      ['tests/test_peft/test_adapter_reference.py', 'tests/test_peft/test_adapter.py']),
    M('adapter-parallel-reads-output', 'mmpeft/peft/adapter.py',
      'return output + self.scale * self(args[0] if self.parallel else output)',
      'return output + self.scale * self(output)',
      ['tests/test_peft/test_adapter_reference.py', 'tests/test_peft/test_adapter.py']),
    M('policy-search-not-match', 'mmpeft/peft/policy.py',
      'hits = [n for n in names if rx.match(n)]', 'hits = [n for n in names if rx.search(n)]',
      ['tests/test_peft/test_policy.py', 'tests/test_peft/test_policy_anchoring.py'],
      "'head' would also train backbone.head.*"),
    M('lite-per-task-vectors-ignore-task', 'mmpeft/peft/hypernet.py',
      'pick = lambda t: t.index_select(0, task_index)  # noqa: E731',
      'pick = lambda t: t[:len(task_index)]  # noqa: E731',
      ['tests/test_backbones/test_polyhistor_task_subsets.py'],
      "tasks=['sal'] would get another task's biases / LayerNorm"),
    M('lite-kernels-ignore-task', 'mmpeft/peft/hypernet.py',
      'self.scaling_kernels.index_select(0, task_index)', 'self.scaling_kernels[:len(task_index)]',
      ['tests/test_backbones/test_polyhistor_task_subsets.py']),
    M('tc-site-reads-sublayer-input', 'mmpeft/peft/task_conditioned.py',
      'branch = adapter_branch(output.reshape(call.groups, -1, d), p)',
      'branch = adapter_branch(args[0].reshape(call.groups, -1, d), p)',
      ['tests/test_backbones/test_polyhistor_block_reference.py'], 'Polyhistor is a different model'),
    M('tc-ffn-site-unhooked', 'mmpeft/peft/task_conditioned.py',
      "peft.hook(blk.proj if pos == 'attn' else blk.mlp, site.hook)",
      "peft.hook(blk.proj, site.hook) if pos == 'attn' else None",
      ['tests/test_backbones/test_polyhistor_block_reference.py'], 'half the adapters never act'),
    M('tc-cache-survives-step', 'mmpeft/peft/task_conditioned.py',
      'key = (tasks, _GENERATION[0], ref.device, ref.dtype)', 'key = (tasks, 0, ref.device, ref.dtype)',
      ['tests/test_peft/test_task_conditioned.py'], 'validation after a training step uses stale adapters'),
    M('tc-batched-tasks-reordered', 'mmpeft/peft/task_conditioned.py',
      'tasks = tuple(call.batch_tasks) if call.batch_tasks is not None',
      'tasks = tuple(sorted(call.batch_tasks)) if call.batch_tasks is not None',
      ['tests/test_backbones/test_polyhistor_swin.py'], "forward_tasks(x, ['sal', 'semseg']) swaps the tasks"),
    M('tc-recompute-outside-call', 'mmpeft/peft/task_conditioned.py',
      'return self.call.tasks, []', 'return None, []',
      ['tests/test_backbones/test_polyhistor_swin.py']),
    M('vpt-shallow-cp-carry-not-an-output', 'mmpeft/peft/prompt.py',
      '        return [self.carry.tensor] if self.carry.tensor is not None else []\n',
      '        return []\n',
      ['tests/test_peft/test_prompt.py'], 'with_cp: the carried prompt states lose their gradient'),
    M('combined-switch-not-shared', 'mmpeft/peft/combined.py',
      'method.switch = self.switch  # one task argument for all of them', 'pass',
      ['tests/test_peft/test_combined.py'], "task='b' would run task 'a' (or fail) in all but one method"),
    # ---- evaluation/
    M('saliency-threshold-ge', 'mmpeft/evaluation/multitask_metric.py',
      'iou=counts_at_thresholds(pos, neg, self.sal_iou_thresholds, inclusive=False)',
      'iou=counts_at_thresholds(pos, neg, self.sal_iou_thresholds, inclusive=True)',
      ['tests/test_evaluation']),
    M('saliency-side-swapped', 'mmpeft/evaluation/multitask_metric.py',
      "side = 'left' if inclusive else 'right'", "side = 'right' if inclusive else 'left'",
      ['tests/test_evaluation']),
    M('saliency-maxf-threshold-gt', 'mmpeft/evaluation/multitask_metric.py',
      'self.sal_f_inclusive = pooled', 'self.sal_f_inclusive = False', ['tests/test_evaluation'],
      'maxF is not the literature\'s (pred >= t)'),
    M('saliency-maxf-old-grid', 'mmpeft/evaluation/multitask_metric.py',
      'sal_f_thresholds = reference_sal_f_thresholds() if pooled else np.linspace(0.2, 0.9, 15)',
      'sal_f_thresholds = np.linspace(0.2, 0.9, 15)', ['tests/test_evaluation']),
    M('saliency-maxf-decimal-grid', 'mmpeft/evaluation/multitask_metric.py',
      'return torch.arange(0.05, 1, 0.05, dtype=torch.float32).double().numpy()',
      'return np.arange(1, 20) / 20', ['tests/test_evaluation']),
    M('miou-absent-classes-skipped', 'mmpeft/evaluation/multitask_metric.py',
      'return float(np.mean(iou) * 100)', 'return float(np.mean(iou[union > 0]) * 100)',
      ['tests/test_evaluation'], 'mIoU differs from the literature\'s on subsets'),
    M('parts-background-only-scored', 'mmpeft/evaluation/multitask_metric.py',
      "if self.parts_background_only == 'ignore' and not confusion[1:].any():",
      "if self.parts_background_only == 'ignore' and not confusion.any():", ['tests/test_evaluation']),
    M('normals-pred-not-normalised', 'mmpeft/evaluation/multitask_metric.py',
      '    p = p / np.maximum(np.linalg.norm(p, axis=0), 1e-12)', '    pass',
      ['tests/test_evaluation']),
    M('miou-absent-classes-counted', 'mmpeft/evaluation/multitask_metric.py',
      'present = union > 0', 'present = union >= 0', ['tests/test_evaluation']),
    M('delta-m-normals-sign', 'mmpeft/evaluation/multitask_metric.py',
      "normals=('normals/mean', False))", "normals=('normals/mean', True))",
      ['tests/test_evaluation']),
    # ---- utils/
    M('param-count-tied-twice', 'mmpeft/utils/param_count.py',
      'for name, p in model.named_parameters():',
      'for name, p in model.named_parameters(remove_duplicate=False):', ['tests/test_utils']),
    M('delta-base-beside-not-tried', 'mmpeft/utils/delta.py',
      '            tried.append(beside)', '            pass',
      ['tests/test_robustness/test_robust_delta.py', 'tests/test_hooks/test_delta_checkpoint.py'],
      'a moved or copied work dir cannot be loaded'),
    M('delta-base-hash-unchecked', 'mmpeft/utils/delta.py',
      "expected = meta.get('base_hash')", 'expected = None',
      ['tests/test_robustness/test_robust_delta.py'], 'a delta expands onto the wrong base'),
    # ---- models/
    M('loss-weights-missing-task-zero', 'mmpeft/models/multitask_dense_model.py',
      'float(loss_weights.get(t, 1.0))', 'float(loss_weights.get(t, 0.0))',
      ['tests/test_models/test_loss_weights_partial.py', 'tests/test_models/test_multitask_dense_model.py'],
      'a task silently stops training'),
    # ---- hooks/
    M('freeze-hook-frozen-eval-skipped', 'mmpeft/hooks/peft_freeze_hook.py',
      '                self._handle = keep_in_eval(model, names)', '                pass',
      ['tests/test_hooks/test_freeze_hook_frozen_eval.py'], 'frozen dropout / norms train'),
    M('freeze-hook-head-dropout-frozen', 'mmpeft/hooks/peft_freeze_hook.py',
      "parameterless='by_owner')", "parameterless='frozen')",
      ['tests/test_hooks/test_freeze_hook_frozen_eval.py'], 'a trainable head trains without its dropout'),
    M('trainable-hook-optimizer-check-removed', 'mmpeft/hooks/trainable_params_hook.py',
      '            if frozen_held:', '            if False:',
      ['tests/test_hooks', 'tests/test_robustness/test_robust_freeze_hook.py']),
    # ---- issue #9: no silent failure
    M('safe-load-runs-pickles', 'mmpeft/utils/checkpoint_io.py',
      'return torch.load(name if is_path else file, map_location=map_location, weights_only=True)',
      'return torch.load(name if is_path else file, map_location=map_location, weights_only=False)',
      ['tests/test_robustness/test_robust_checkpoint_io.py'], 'a malicious checkpoint runs code'),
    M('work-dir-lock-not-exclusive', 'mmpeft/utils/work_dir.py',
      'fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)', 'pass',
      ['tests/test_robustness/test_robust_resume.py'], 'two trainings interleave checkpoints'),
    M('resume-rng-not-restored', 'mmpeft/hooks/exact_resume_hook.py',
      '''            set_rng_state(self._state)
            self._state = None''', '''            self._state = None''',
      ['tests/test_robustness/test_robust_resume.py'], 'resume differs from an uninterrupted run'),
    M('nonfinite-weights-saved', 'mmpeft/hooks/finite_check_hook.py',
      'if isinstance(v, torch.Tensor) and v.is_floating_point() and _non_finite(v)]',
      'if False]', ['tests/test_robustness/test_robust_training_guards.py'],
      'a checkpoint with NaN weights is written'),
    M('missing-task-trains-on', 'mmpeft/models/multitask_dense_model.py',
      '            self._check_batch_tasks(data_samples)', '            pass',
      ['tests/test_robustness/test_robust_model_inputs.py'], 'a task missing from the data logs 0.0'),
    # ---- issue #10: HST as released
    M('hst-register-norm-skipped', 'mmpeft/backbones/transformation_bridge.py',
      'return reg if self.register_norms is None else self.register_norms[layer](reg)', 'return reg',
      ['tests/test_backbones/test_hst_vit.py'], 'not the released model: checkpoints give other outputs'),
    M('hst-global-token-before-resize', 'mmpeft/backbones/transformation_bridge.py',
      'mg_parts.append(resized.mean(dim=1, keepdim=True))', 'mg_parts.append(proj.mean(dim=(1, 2)).unsqueeze(1))',
      ['tests/test_backbones/test_hst_vit.py']),
    M('hst-stem-norm-eps', 'mmpeft/backbones/side_network.py',
      'self.norm2 = LayerNorm2d(out_channels, eps=EMBED_NORM_EPS)', 'self.norm2 = LayerNorm2d(out_channels)',
      ['tests/test_backbones/test_hst_vit.py']),
    M('hst-parallel-ignores-grad-mode', 'mmpeft/backbones/hst_parallel.py',
      '        stack.enter_context(torch.set_grad_enabled(grad))\n', '',
      ['tests/test_backbones/test_hst_vit.py'], 'inference under no_grad builds a graph in the side thread'),
    M('hst-official-register-norm-shifted', 'mmpeft/backbones/hst_official_checkpoint.py',
      "t[f'm_proj_norm{i + 1}.{p}'] = f'bridge.register_norms.{i}.{p}'",
      "t[f'm_proj_norm{i + 1}.{p}'] = f'bridge.register_norms.{(i + 1) % n_layers}.{p}'",
      ['tests/test_tools/test_hst_official_converter.py'], "the authors' checkpoints load into the wrong layers"),
    # ---- tools/
    M('train-resume-ignores-ckpt', 'tools/train.py', '        cfg.load_from = args.resume',
      '        cfg.load_from = None', ['tests/test_tools/test_train_cli.py']),
    M('train-cfg-options-ignored', 'mmpeft/utils/runner_cfg.py', '        cfg.merge_from_dict(cfg_options)',
      '        pass', ['tests/test_tools/test_train_cli.py']),
]


def _copy_tree(dst: str) -> None:
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard'], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split('\n')
    for rel in filter(None, files):
        src = osp.join(ROOT, rel)
        if not osp.isfile(src):
            continue
        os.makedirs(osp.dirname(osp.join(dst, rel)) or dst, exist_ok=True)
        shutil.copy2(src, osp.join(dst, rel))


def _run_pytest(where: str, tests: Sequence[str], timeout: int) -> bool:
    env = dict(os.environ, PYTHONPATH=where, OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'pytest', '-x', '-q', '-p', 'no:cacheprovider', *tests]
    try:
        r = subprocess.run(cmd, cwd=where, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False  # a hang counts as caught (the suite's own timeout would fail it)
    return r.returncode == 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--only', help='run mutants whose name contains this text')
    p.add_argument('--full', action='store_true', help='run the whole suite for each mutant')
    p.add_argument('--list', action='store_true', help='list the mutants and exit')
    p.add_argument('--timeout', type=int, default=1800, help='seconds per mutant')
    args = p.parse_args()
    mutants = [m for m in MUTANTS if not args.only or args.only in m.name]
    if args.list:
        for m in mutants:
            print(f'{m.name:40s} {m.path}  {m.why}')
        return 0
    scratch = tempfile.mkdtemp(prefix='mmpeft-mutants-')
    try:
        _copy_tree(scratch)
        caught, survived, stale = [], [], []
        for m in mutants:
            target = osp.join(scratch, m.path)
            with open(target) as f:
                original = f.read()
            if original.count(m.old) != 1:
                stale.append(m.name)
                print(f'STALE     {m.name}: snippet occurs {original.count(m.old)} times in {m.path}')
                continue
            with open(target, 'w') as f:
                f.write(original.replace(m.old, m.new))
            t0 = time.time()
            try:
                passed = _run_pytest(scratch, ['tests'] if args.full else m.tests, args.timeout)
            finally:
                with open(target, 'w') as f:
                    f.write(original)
            (survived if passed else caught).append(m.name)
            print(f"{'SURVIVED' if passed else 'caught  '}  {m.name}  ({time.time() - t0:.0f} s)",
                  flush=True)
        print(f'\n{len(caught)} of {len(mutants)} caught; survived: {survived or "none"}; '
              f'stale: {stale or "none"}')
        return 1 if survived or stale else 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == '__main__':
    sys.exit(main())
