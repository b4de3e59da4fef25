"""The bottom layer: types and helpers every other part of meal may use, importing nothing of meal but
:mod:`meal.errors` (a test checks it). A teacher (:class:`~meal.core.teacher.Teacher`), running frozen
teachers (:mod:`meal.core.frozen`), atomic file writes (:mod:`meal.core.io`), the optimizer
constructor shared by students and discriminators (:mod:`meal.core.optim`) and a run's result, the typed
form of its ``result.json`` (:class:`~meal.core.result.Result`)."""
