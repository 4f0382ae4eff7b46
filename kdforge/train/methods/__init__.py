"""Registered distillation methods; importing this package registers them all."""

from kdforge.train.methods import at, ce, dml, fitnet, jointrd, kd, pkkd, refilled, rkd, sp, tofd  # noqa: F401  (registration)
from kdforge.train.methods.base import Distiller
from kdforge.train.methods.registry import list_methods, method_class, register_method


def uses_teacher(student) -> bool:
    """Whether a student's method, with its options, learns from the run's teacher."""
    cls = method_class(student.method)
    return cls.uses_teacher(cls.Options(**student.options))


def teacher_method(cfg) -> str:
    """The method the teacher stage trains with: what the students' methods ask for (TOFD's
    teacher carries auxiliary heads), plain cross-entropy otherwise."""
    wanted = {method_class(s.method).teacher_method for s in cfg.students if uses_teacher(s)} - {Distiller.teacher_method}
    if len(wanted) > 1:
        from kdforge.errors import UserError

        raise UserError(f"students ask for teachers trained in different ways ({', '.join(sorted(wanted))}); split them into two configs.")
    return wanted.pop() if wanted else Distiller.teacher_method


__all__ = ["Distiller", "list_methods", "method_class", "register_method", "teacher_method", "uses_teacher"]
