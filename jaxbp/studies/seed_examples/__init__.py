"""Every worked example of the seeds, with jaxbp's numbers beside the seed's.

    from jaxbp.studies import seed_examples
    config = seed_examples.Config(only="004", torch=False)
    rows = seed_examples.run(config)                   # a list of Row
    print(seed_examples.report_text(rows, config))     # what experiments/seed_examples.py prints
    seed_examples.run(config, "out/seed_examples")     # also report.md, rows.json, ...

``run`` computes in float64 inside :func:`float64` and leaves the x64 flag as
it found it; importing this package changes no JAX setting. The example
functions themselves assume float64 (``run`` provides it; call them inside
``float64()``).

The seeds are the five lecture notes in ``seeds/`` (000-004). Each example
function (one module per seed, ``seed000`` .. ``seed004``) reproduces one worked
example and returns rows ``(example, quantity, seed, jaxbp, agreement)``. Where
a seed prints a number, ``seed`` is that number as printed and it is compared at
the printed precision (abs 5e-3 for two decimals, 5e-5 for four); where a seed
gives a formula or code but no number, ``seed`` is that formula or code
evaluated here in numpy / plain Python, and it is compared with ``jax.grad`` or
jaxbp at 1e-12. The agreement column reads:

  yes ...             agrees within the stated tolerance
  NO ...              disagrees: a bug in jaxbp or in these examples (tests fail)
  seed wrong: ...     the seed's formula or code is wrong; jaxbp's is right
  seed inconsistent:  the seed's own printed numbers contradict each other
  note: ...           a convention, or a number the seed does not print

Mistakes and inconsistencies found in the seeds (each has a row in the table):

  000 §7.2  ReLU': the formula says 1 at x = 0, the code returns 0 there (jaxbp:
            0, as jax.nn.relu). The Tanh heading names ``tf.nn.relu``.
  000 §7.3  The MSE gradient has the wrong sign: d/dθ sum (y - f)^2 =
            -2 sum (y - f) df/dθ.
  000 §7.7  The hidden-layer result is written dL/dw_jk; it is dL/dw_ij.
  001       The unary gates f_c, f_a are justified by "we do need the gradients
            of the constants c, a": a one-input gate gives them none, which is
            only right because they are NOT needed.
  001       The convexity test is backwards: f'' <= 0 makes f concave; with the
            seed's own midpoint definition, f = -x^2 is not convex.
  002       ``one_hot`` shifts labels by the batch minimum, so a batch without
            class 0 is encoded with the wrong classes and the wrong depth.
  002       ``grad_softmax = s(1 - s)`` is only the Jacobian's diagonal; the
            off-diagonal part "not used in backprop" is needed: softmax + MSE
            and softmax + cross-entropy both give wrong deltas without it.
  002       ``grad_mse = -(y - p)`` is the gradient of 1/2 (p - y)^2, half that
            of the ``mse`` it accompanies (and it is called the gradient of the
            root-mean-square error). ``mse(method='mean')`` returns one number
            per output, not a scalar.
  002       The "multi-class cross-entropy" (26) is a mean of binary
            cross-entropies; the categorical one is -sum_j y_j log p_j.
  002       Eq. (4) writes ``W X`` where the shapes in (5) need ``X W``.
  003       In the grad_table walk, "df/du_5 = df/du_9 du_9/du_5 = 1" and
            "df/du_7 = df/du_5 du_5/du_7" mean u_8: u_5 is not an input of u_9.
  004       "The gradient points opposite to the direction of fastest increase":
            it points along it (the directional derivative along g/|g| is +|g|).
  004       The printed numbers are inconsistent: w1 (In[27]) is not
            w0 - 0.1 * grad (In[6]) (max difference 0.045, far above rounding).
            The execution counters suggest why: In[17], the 100-step momentum
            training of a fresh net, ran between In[6] and In[27], so the dw and
            w0 of In[27]/In[29] belong to that trained net (and its dw was
            computed before its last opt.step(), w0 after). The In[6] gradient
            cannot be recomputed at all: the net was initialised without a seed.
            What can be checked is: w1 from w0 and the dw implied by w1
            ((w0 - w1) / 0.1, nearly rank one: singular values 0.86, 0.006,
            0.0004), the momentum step from v = 0 equal to the SGD step (In[29]
            prints the same w1), and, on the seed's x, z with the seed's w0 as
            h1's weights, the h1 gradient by jaxbp's recursion, jax.grad and
            PyTorch, in PyTorch's (out, in) layout (the transpose of jaxbp's).

Smaller slips, not tabulated: 000 writes ∇L = (L/∂θ_1, ...) without the ∂ and
the softmax derivation's i = j line has e^{a_j} for e^{a_i}; 001's staged code
has ``d xpysqr`` / ``d xpy`` (spaces: not Python); 002's eq. (1) adds the bias
as a column to an n x 2 matrix (it is a row) and writes X_i for X_0, eq. (13)
transposes the wrong factor, its derivation (21) has a garbled middle line
(``= softmax(x_j) = ...``) and "sortmax", its code mixes ``self.grad_w`` and
``self.grad_W``, and ``grad_relu`` casts to float32; 004's ``Model0(3, 3)``
ignores its arguments.
"""
from jaxbp.studies.seed_examples import report
from jaxbp.studies.seed_examples import seed000
from jaxbp.studies.seed_examples import seed001
from jaxbp.studies.seed_examples import seed002
from jaxbp.studies.seed_examples import seed003
from jaxbp.studies.seed_examples import seed004
from jaxbp.studies.seed_examples.common import EXACT
from jaxbp.studies.seed_examples.common import EXAMPLE_NAMES
from jaxbp.studies.seed_examples.common import KINDS
from jaxbp.studies.seed_examples.common import PRINTED_2
from jaxbp.studies.seed_examples.common import PRINTED_4
from jaxbp.studies.seed_examples.common import Config
from jaxbp.studies.seed_examples.common import Row
from jaxbp.studies.seed_examples.common import flat
from jaxbp.studies.seed_examples.common import float64
from jaxbp.studies.seed_examples.report import disagreements
from jaxbp.studies.seed_examples.report import format_rows
from jaxbp.studies.seed_examples.report import report_text
from jaxbp.studies.seed_examples.report import summary
from jaxbp.studies.seed_examples.runner import EXAMPLES
from jaxbp.studies.seed_examples.runner import run

__all__ = (
    "EXACT", "EXAMPLES", "EXAMPLE_NAMES", "KINDS", "PRINTED_2", "PRINTED_4", "Config", "Row",
    "disagreements", "flat", "float64", "format_rows", "report", "report_text", "run",
    "seed000", "seed001", "seed002", "seed003", "seed004", "summary",
)
