"""The gate a trained net passes before it goes live: a pure judgement of the figures the
training process measured before and after (``trainer.compare``) on images the training
never saw: MNIST's official test images (overall and per digit) and the held-out drawings.

A training whose candidate fails is kept as a version that is not current; the net answers
as before (``training.run_job``). The tolerances are settings (``tolerances``), stated with
their reasons in docs/models.md. Every figure is a count of images read right, so a
tolerance is a number of images: 0.3 points of MNIST's 10,000 test images are 30 images.
"""

EPSILON = 1e-9  # a loss exactly at the tolerance passes, whatever the float rounding


def tolerances(settings, private):
    """The tolerances of a net's gate: the shared net's, or a private net's."""
    if private:
        return {'test_points': settings.gate_private_test_points, 'class_points': None,
                'samples_points': 0.0, 'samples_drawings': settings.gate_private_drawings}
    return {'test_points': settings.gate_test_points, 'class_points': settings.gate_class_points,
            'samples_points': settings.gate_samples_points, 'samples_drawings': 1}


def points(fraction):
    return round(100 * fraction, 2)


def digits(d):
    return f'{d}s'


def judge(before, after, tolerances, private=False):
    """Whether the net ``after`` may replace the net ``before`` (their ``trainer.compare``
    figures): {"passed", "reason" (words a student understands), "test", "worst_class",
    "samples" (the figures checked, None when not measured), "tolerances"}.

    - MNIST's test images: at most ``test_points`` points lost overall. Per digit (unless
      ``class_points`` is None): at most ``class_points`` points lost, or as many points as
      the digit's errors were when it had more (its errors may at most double: one epoch of
      a small net moves a digit it reads 95% right by a few points), plus what the whole set
      gained (a net still learning, a fresh one, trades between digits).
    - The held-out drawings: at most ``samples_points`` points of them read worse, and never
      fewer than ``samples_drawings`` drawings allowed (one drawing of a few dozen is several
      points: a smaller slack would fail an honest training at random).
    """
    failures, notes = [], []  # (points over the tolerance, words)
    verdict = {'test': None, 'worst_class': None, 'classes_failed': [], 'samples': None,
               'tolerances': dict(tolerances)}
    if before.get('test') is not None and after.get('test') is not None:
        lost = points(before['test'] - after['test'])
        allowed = tolerances['test_points']
        verdict['test'] = {'before': before['test'], 'after': after['test'],
                           'count': after.get('test_count'), 'lost_points': lost,
                           'allowed_points': allowed}
        words = (f"it reads MNIST's test images {abs(lost):.2f} points "
                 f"{'worse' if lost > 0 else 'better'} ({points(after['test']):.2f}%, was "
                 f"{points(before['test']):.2f}%")
        if lost > allowed + EPSILON:
            failures.append((lost - allowed, f'{words}; at most {allowed:g} allowed)'))
        else:
            notes.append(words + ')')
        if tolerances.get('class_points') is not None and before.get('test_per_class') and \
                after.get('test_per_class'):
            gained = max(0.0, -lost)
            # (points lost beyond what is allowed, points lost, allowed, digit, before, after)
            changes = sorted(((points(b - a) - allowance, points(b - a), allowance, d, b, a)
                              for d, (b, a) in enumerate(zip(before['test_per_class'],
                                                             after['test_per_class']))
                              for allowance in [round(max(tolerances['class_points'],
                                                          points(1 - b)) + gained, 2)]),
                             reverse=True)
            _, lost_class, allowed, d, b, a = changes[0]
            verdict['worst_class'] = {'digit': d, 'before': b, 'after': a,
                                      'lost_points': lost_class, 'allowed_points': allowed}
            over = [change for change in changes if change[0] > EPSILON]
            if over:
                excess, lost_class, allowed, d, b, a = over[0]
                others = ', '.join(digits(o[3]) for o in over[1:])
                failures.append((excess, (
                    f"it reads MNIST's {digits(d)} {lost_class:.1f} points worse "
                    f'({points(a):.1f}%, was {points(b):.1f}%; at most {allowed:g} allowed'
                    + (f'; the {others} lost more than allowed too)' if others else ')'))))
            verdict['classes_failed'] = [o[3] for o in over]
    else:
        notes.append("MNIST's test images are not on this server (models/mnist-test.npz), "
                     'so they were not checked')
    count = after.get('samples_count') or 0
    if count and before.get('samples_right') is not None and \
            after.get('samples_right') is not None:
        right_before, right_after = before['samples_right'], after['samples_right']
        allowed = max(tolerances['samples_drawings'],
                      int(tolerances['samples_points'] / 100 * count + EPSILON))
        verdict['samples'] = {'before_right': right_before, 'after_right': right_after,
                              'count': count, 'allowed_drawings': allowed}
        whose = 'your' if private else 'the'
        words = (f'it reads {right_after} of {whose} {count} held-out drawings right (was '
                 f'{right_before}')
        if right_before - right_after > allowed:
            failures.append((100 * (right_before - right_after - allowed) / count,
                             f'{words}; ' + ('not one fewer allowed)' if allowed == 0 else
                                             f'at most {allowed} fewer allowed)')))
        else:
            notes.append(words + ')')
    verdict['passed'] = not failures
    if failures:
        failures.sort(key=lambda f: -f[0])
        verdict['reason'] = '; '.join(words for _, words in failures)
    else:
        verdict['reason'] = 'no worse than allowed: ' + '; '.join(notes)
    return {'passed': verdict['passed'], 'reason': verdict['reason'], **verdict}
