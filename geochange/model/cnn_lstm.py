"""CNN-LSTM change detector: a plain ``nn.Module`` (no rasterio, no Lightning).

Per date, a small CNN encoder (shared across dates) turns the normalised bands into features
``f_t``; a bidirectional ConvLSTM runs over the dates on ``[f_t, f_t - f_{t-1}]``; heads give a
logit per interval (change first seen on date ``t``, i.e. interval ``t - 1``) and a change logit.

Design choices that keep chunked inference exact (see FIELD_NOTES "Tiling and seams"):

- full resolution everywhere (no stride, pooling or upsampling) and zero padding, so a chunk with
  a halo of :meth:`CNNLSTM.halo` pixels gives exactly the whole-scene output;
- no normalisation over space (inputs are standardised scene-wide before the model, see
  :mod:`geochange.model.normalize`), no dropout;
- an invalid (nodata / masked) date carries the previous date's features and the recurrent state
  is not updated there, so such a date leaves the state untouched and cannot create change.

With ``clouds=True`` a small per-date head flags clouds and shadows from each date's features and
how they differ from the pixel's *closest* other date (a cloud passes: no other date looks like
it; a new roof stays: the next date does); with three or more dates, flagged pixels are treated as
invalid for that date, exactly as a user's cloud mask is, so a stack without masks is masked by
the model itself. The head is trained on the synthetic cloud masks; the gate is a hard threshold
(no gradient through it). Two dates are never gated: masking one leaves nothing to compare.

The change probability and the interval distribution form one model: with per-interval logits
``l_k`` and a context term ``d`` from a small 3×3 decoder over the final states,
``change_logit = logsumexp_k(l_k) + d`` (a softmax over "no change" and the T-1 intervals whose
no-change logit is ``-d``), and ``softmax_k(l_k)`` is the change date distribution.

A series longer than ``change_window`` dates (10 by default: the shipped model learned from 2-10
dates) sums the intervals of its most telling run of that many consecutive dates
(:func:`window_logsumexp`), not all T-1 of them: every interval of a stable pixel holds a little
probability, and over 95 intervals that background alone adds log(95/9) ≈ 2.4 to the change logit
of a 10-date series, so whole stable fields would come out "changed" only because the series is
long. The change date distribution still spans the whole series.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from geochange.errors import ModelError
from geochange.memory import segment_length

__all__ = [
    "CHANGE_WINDOW",
    "CLOUD_GATE",
    "CNNLSTM",
    "MASKED_LOGIT",
    "encode_wavelengths",
    "local_contrast",
    "shift_min_distance",
    "window_logsumexp",
]

#: Logit given to intervals that cannot hold a change (their "after" date is invalid, or no
#: valid date precedes it).
MASKED_LOGIT = -1e4

#: Consecutive dates whose intervals make a long series' change logit (the default
#: ``change_window``): the longest series the shipped model learned from.
CHANGE_WINDOW = 10

#: Channels of the 1×1 projection compared under shifts (``shift_radius`` > 0).
MATCH_CHANNELS = 4

#: Cloud probability from which the cloud head (``clouds=True``) masks a pixel's date.
CLOUD_GATE = 0.5
#: Initial bias of the cloud head: sigmoid(-3) = 0.05, so an untrained head masks nothing.
_CLOUD_BIAS = -3.0


def _radius(module: nn.Module) -> int:
    """Receptive radius (pixels) of a chain of stride-1 convolutions: sum of d·(k-1)/2."""
    r = 0
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            if m.stride != (1, 1):  # pragma: no cover - guarded by construction
                raise ValueError("CNNLSTM assumes stride-1 convolutions for exact tiling")
            ky, kx = m.kernel_size
            dy, dx = m.dilation
            r += max(dy * (ky - 1) // 2, dx * (kx - 1) // 2)
    return r


def shift_min_distance(a: Tensor, b: Tensor, radius: int) -> Tensor:
    """Misregistration-tolerant distance: ``min over |s| <= radius of mean_c |a(p) - b(p + s)|``.

    ``a``, ``b``: (n, C, h, w) features of two dates. Returns (n, 1, h, w). A pixel of ``a`` that
    matches ``b`` anywhere within ``radius`` pixels (a shifted edge, a moved texture) gets a
    small distance; a new object that ``b`` has nowhere near gets a large one. Edges of the tile
    replicate (only the halo sees them).
    """
    r = int(radius)
    h, w = a.shape[-2:]
    bp = nn.functional.pad(b, (r, r, r, r), mode="replicate")
    best: Tensor | None = None
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            d = (a - bp[..., dy : dy + h, dx : dx + w]).abs().mean(dim=1, keepdim=True)
            best = d if best is None else torch.minimum(best, d)
    assert best is not None
    return best


def local_contrast(d: Tensor, radius: int) -> Tensor:
    """``d`` minus its mean over a ``(2r+1)²`` window: change compared with the surroundings.

    ``d``: (n, C, h, w). Zero padding (the window counts outside pixels as 0), so a tile with
    a halo of ``radius`` more pixels gives exactly the whole-scene values.
    """
    k = 2 * int(radius) + 1
    return d - nn.functional.avg_pool2d(d, k, stride=1, padding=int(radius), count_include_pad=True)


def spectral_input(x: Tensor, valid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The first and last valid dates' bands and their difference, each (b, c, h, w), from
    ``x`` (b, t, c, h, w) and ``valid`` (b, t, h, w); zero where no date is valid."""
    first = torch.zeros_like(x[:, 0])
    last = torch.zeros_like(x[:, 0])
    seen = torch.zeros_like(valid[:, 0:1], dtype=torch.bool)
    for i in range(x.shape[1]):
        v = valid[:, i, None].to(torch.bool)
        first = torch.where(v & ~seen, x[:, i], first)
        last = torch.where(v, x[:, i], last)
        seen = seen | v
    return first, last, last - first


def window_logsumexp(logits: Tensor, window: int) -> Tensor:
    """(b, h, w) the largest logsumexp of ``window`` consecutive entries of ``logits``
    (b, n, h, w) along dim 1; with ``n <= window`` (or ``window`` 0), of all of them."""
    n = logits.shape[1]
    if not window or n <= window:
        return torch.logsumexp(logits, dim=1)
    best = torch.logsumexp(logits[:, :window], dim=1)
    for s in range(1, n - window + 1):
        best = torch.maximum(best, torch.logsumexp(logits[:, s : s + window], dim=1))
    return best


def _conv(cin: int, cout: int, k: int, bias: bool = True, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(
        cin,
        cout,
        k,
        padding=dilation * (k // 2),
        dilation=dilation,
        bias=bias,
        padding_mode="zeros",
    )


# Radial basis over log-wavelength that tells the band-agnostic stem where a band sits in the
# spectrum: centres from the blue to the SWIR-2, one basis width apart.
_WL_CENTRES_NM = (443.0, 490.0, 560.0, 665.0, 705.0, 783.0, 865.0, 1000.0, 1240.0, 1610.0, 2190.0)
_WL_WIDTH = 0.12  # in ln(nm): neighbouring Sentinel-2 / Landsat bands overlap, far ones do not


def encode_wavelengths(wavelengths: Tensor) -> Tensor:
    """``(n, c)`` band centres in nm (NaN = unknown) → ``(n, c, 1 + K)`` codes.

    Code 0 says whether the band is known; the K others are a radial basis over log-wavelength,
    all zero for an unknown band, so "unknown" is one fixed code the model learns too.
    """
    known = torch.isfinite(wavelengths)
    log_wl = torch.log(torch.where(known, wavelengths, torch.ones_like(wavelengths)).clamp(min=1.0))
    centres = torch.log(wavelengths.new_tensor(_WL_CENTRES_NM))
    rbf = torch.exp(-0.5 * ((log_wl[..., None] - centres) / _WL_WIDTH) ** 2)
    known_f = known.to(wavelengths.dtype)[..., None]
    return torch.cat([known_f, rbf * known_f], dim=-1)


class _BandAgnosticStem(nn.Module):
    """Shared per-band 3×3 conv on ``[x_b, mean over bands]``, pooled (mean, max) over bands.

    ``(n, c, h, w) -> (n, 2F, h, w)`` for any band count c; invariant to band order. With
    ``wavelengths``, each band's conv output is scaled and shifted per channel by a code of its
    centre wavelength (FiLM), so the pooled features know which band moved which way (NIR up and
    red down is a field greening up, not a clearing); unknown bands get the learned "unknown"
    code. The modulation starts at zero (identity).
    """

    def __init__(self, features: int, wavelengths: bool = False) -> None:
        super().__init__()
        self.conv = _conv(2, features, 3)
        self.out_channels = 2 * features
        self.film: nn.Linear | None = None
        if wavelengths:
            self.film = nn.Linear(1 + len(_WL_CENTRES_NM), 2 * features)
            nn.init.zeros_(self.film.weight)
            nn.init.zeros_(self.film.bias)

    def forward(self, x: Tensor, wavelengths: Tensor | None = None) -> Tensor:
        n, c, h, w = x.shape
        mean = x.mean(dim=1, keepdim=True).expand(n, c, h, w)
        pair = torch.stack([x, mean], dim=2).reshape(n * c, 2, h, w)
        y = self.conv(pair).reshape(n, c, -1, h, w)
        if self.film is not None:
            if wavelengths is None:
                wavelengths = x.new_full((n, c), float("nan"))
            gain, shift = self.film(encode_wavelengths(wavelengths)).chunk(2, dim=-1)
            y = y * (1.0 + gain[..., None, None]) + shift[..., None, None]
        y = torch.relu(y)
        return torch.cat([y.mean(dim=1), y.amax(dim=1)], dim=1)


class _BandStem(nn.Module):
    """Ordinary 3×3 conv for a fixed band count: ``(n, C, h, w) -> (n, 2F, h, w)``."""

    def __init__(self, in_bands: int, features: int) -> None:
        super().__init__()
        self.conv = _conv(in_bands, 2 * features, 3)
        self.out_channels = 2 * features

    def forward(self, x: Tensor, wavelengths: Tensor | None = None) -> Tensor:
        return torch.relu(self.conv(x))


class _ConvLSTMDirection(nn.Module):
    """One ConvLSTM direction: 1×1 input-to-gates, k×k hidden-to-gates (no bias there, so a zero
    initial state reaches no neighbour)."""

    def __init__(self, in_channels: int, hidden: int, kernel: int) -> None:
        super().__init__()
        self.xg = _conv(in_channels, 4 * hidden, 1)
        self.hh = _conv(hidden, 4 * hidden, kernel, bias=False)
        with torch.no_grad():  # forget-gate bias 1: remember by default
            self.xg.bias.zero_()
            self.xg.bias[hidden : 2 * hidden] = 1.0

    def step(self, inp: Tensor, h: Tensor, c: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """One masked step: ``inp`` (n, Cin, h, w), ``h``/``c`` (n, H, h, w), ``valid``
        (n, 1, h, w) bool; where invalid the state is kept."""
        i, f, g, o = (self.xg(inp) + self.hh(h)).chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_new = torch.sigmoid(o) * torch.tanh(c_new)
        return torch.where(valid, h_new, h), torch.where(valid, c_new, c)


class CNNLSTM(nn.Module):
    """CNN encoder shared across dates + bidirectional ConvLSTM + interval and change heads.

    Args:
        in_bands: None for the band-agnostic model (any 1..16+ bands, a stem shared across bands
            and pooled over them), or the fixed number of bands of a band-specific model.
        features: encoder width F (the stem gives 2F channels, the encoder F).
        hidden: ConvLSTM state channels H per direction.
        encoder_layers: 3×3 convolutions after the stem.
        recurrent_kernel: kernel of the hidden-to-hidden convolution (odd).
        head_hidden: width of the 1×1 interval head and of the context decoder.
        context_dilations: dilations of the 3×3 convolutions of the context decoder over the
            final states; ``(1, 2, 4, 8)`` sees 15 px around a pixel, so the interior of a large
            object is judged with its outline in view. ``(1,)`` is the plain 3×3 decoder.
        shift_radius: when > 0, each step also gets two misregistration-tolerant distances
            between the date and the previous one (:func:`shift_min_distance` on a 1×1
            projection of the features, both ways, so
            objects that appear and objects that vanish both stand out); whole-date shifts of
            up to this many pixels then look like no change. 0 = plain differences only.
        wavelengths: band-agnostic model only: the stem is told each band's centre wavelength
            (``forward(..., wavelengths=)``), see :func:`encode_wavelengths`.
        clouds: a per-date cloud/shadow head whose flags (probability >= :data:`CLOUD_GATE`)
            mask that date at that pixel, as a user's cloud mask does (see the module notes).
        context_skip: add a 1×1 path from each pixel's own final states to the context term,
            beside the dilated decoder, so a 2-px object is not judged by its 15-px surroundings
            alone (zero at start).
        local_contrast: when > 0, each step also gets the feature difference minus its mean
            over a (2r+1)² window (:func:`local_contrast`): how much a pixel changed *compared
            with its surroundings*. A field that greens up or is harvested as a whole gives
            about zero inside; a 2-px roof appearing in it stands out. 0 = off.
        spectral_bands: when > 0, a per-pixel term of the change logit from the scene's own
            band values: a 1×1 network over the first and last valid dates' normalised bands,
            their difference and the final states (zero at start). Set when a model is taught
            on one scene's examples (:mod:`geochange.model.fewshot`), so that it can learn what
            that user calls change in that sensor's spectra; the model then takes exactly this
            many bands. 0 = off.
        change_window: a series longer than this many dates gets the change logit of its most
            telling run of this many consecutive dates (module notes): set it to the longest
            series the model learned from. 0 = all of the series' intervals.

    Shapes: ``x`` (b, t, c, h, w) float32, normalised (see ``normalize.apply``), no NaN;
    ``valid`` (b, t, h, w) bool. Works for any t >= 2.
    """

    def __init__(
        self,
        in_bands: int | None = None,
        features: int = 16,
        hidden: int = 16,
        encoder_layers: int = 2,
        recurrent_kernel: int = 3,
        head_hidden: int = 16,
        context_dilations: tuple[int, ...] | list[int] = (1,),
        shift_radius: int = 0,
        wavelengths: bool = False,
        clouds: bool = False,
        local_contrast: int = 0,
        context_skip: bool = False,
        spectral_bands: int = 0,
        change_window: int = CHANGE_WINDOW,
    ) -> None:
        super().__init__()
        if in_bands is not None and in_bands < 1:
            raise ModelError(f"in_bands: got {in_bands}, expected None or a band count >= 1")
        if recurrent_kernel % 2 != 1:
            raise ModelError(f"recurrent_kernel: got {recurrent_kernel}, expected an odd size")
        dilations = tuple(int(d) for d in context_dilations)
        if not dilations or min(dilations) < 1:
            raise ModelError(
                f"context_dilations: got {context_dilations!r}, expected one or more integers >= 1"
            )
        if int(shift_radius) < 0:
            raise ModelError(f"shift_radius: got {shift_radius}, expected an integer >= 0")
        if int(spectral_bands) < 0:
            raise ModelError(f"spectral_bands: got {spectral_bands}, expected an integer >= 0")
        if int(local_contrast) < 0:
            raise ModelError(f"local_contrast: got {local_contrast}, expected an integer >= 0")
        if int(change_window) != 0 and int(change_window) < 2:
            raise ModelError(
                f"change_window: got {change_window}, expected 0 (the whole series) or >= 2 dates"
            )
        self.change_window = int(change_window)
        self.local_contrast = int(local_contrast)
        self.in_bands = in_bands
        self.shift_radius = int(shift_radius)
        self.features = features
        self.hidden = hidden
        self.stem: nn.Module = (
            _BandAgnosticStem(features, bool(wavelengths))
            if in_bands is None
            else _BandStem(in_bands, features)
        )
        layers: list[nn.Module] = []
        cin = 2 * features
        for _ in range(encoder_layers):
            layers += [_conv(cin, features, 3), nn.ReLU()]
            cin = features
        self.encoder = nn.Sequential(*layers)
        # Matching features for the shift-tolerant distances: a 1×1 projection keeps the
        # (2r+1)² comparisons cheap.
        self.match = _conv(features, MATCH_CHANNELS, 1) if self.shift_radius else None
        # Cloud head on [f_t, f_t - f_closest other date]: sees 5 px around (clouds are wide,
        # soft-edged; roofs sharp) and whether the pixel looks unlike all its other dates.
        self.cloud: nn.Sequential | None = None
        if clouds:
            self.cloud = nn.Sequential(
                _conv(2 * features, head_hidden, 3, dilation=2), nn.ReLU(), _conv(head_hidden, 1, 1)
            )
            with torch.no_grad():
                self.cloud[-1].bias.fill_(_CLOUD_BIAS)
        n_diff = features * (2 if self.local_contrast else 1) + (2 if self.shift_radius else 0)
        self.fwd = _ConvLSTMDirection(features + n_diff, hidden, recurrent_kernel)
        self.bwd = _ConvLSTMDirection(features + n_diff, hidden, recurrent_kernel)
        # Interval head on [h_fwd_{t-1}, h_bwd_t, differences]: past summary vs future summary.
        self.interval_head = nn.Sequential(
            _conv(2 * hidden + n_diff, head_hidden, 1), nn.ReLU(), _conv(head_hidden, 1, 1)
        )
        # Spatial context term of the change logit, over the final states of both directions.
        layers = []
        cin = 2 * hidden
        for d in dilations:
            layers += [_conv(cin, head_hidden, 3, dilation=d), nn.ReLU()]
            cin = head_hidden
        self.decoder = nn.Sequential(*layers, _conv(head_hidden, 1, 1))
        self.context_dilations = dilations
        self.skip: nn.Conv2d | None = None
        if context_skip:
            self.skip = _conv(2 * hidden, 1, 1, bias=False)
            nn.init.zeros_(self.skip.weight)
        self.spectral_bands = int(spectral_bands)
        self.spectral: nn.Sequential | None = None
        if self.spectral_bands:
            self.spectral = nn.Sequential(
                _conv(3 * self.spectral_bands + 2 * hidden, 2 * head_hidden, 1),
                nn.ReLU(),
                _conv(2 * head_hidden, 1, 1),
            )
            nn.init.zeros_(self.spectral[-1].weight)
            nn.init.zeros_(self.spectral[-1].bias)

    def config(self) -> dict:
        """Constructor arguments, to rebuild the network from a checkpoint."""
        return {
            "in_bands": self.in_bands,
            "features": self.features,
            "hidden": self.hidden,
            "encoder_layers": sum(isinstance(m, nn.Conv2d) for m in self.encoder),
            "recurrent_kernel": self.fwd.hh.kernel_size[0],
            "head_hidden": self.decoder[0].out_channels,
            "context_dilations": list(self.context_dilations),
            "shift_radius": self.shift_radius,
            "wavelengths": self.uses_wavelengths,
            "clouds": self.cloud is not None,
            "local_contrast": self.local_contrast,
            "context_skip": self.skip is not None,
            "spectral_bands": self.spectral_bands,
            "change_window": self.change_window,
        }

    @property
    def band_count(self) -> int | None:
        """The number of bands the model takes; None = any."""
        return self.in_bands if self.in_bands is not None else (self.spectral_bands or None)

    @property
    def uses_wavelengths(self) -> bool:
        """Whether the stem is told the bands' centre wavelengths."""
        return getattr(self.stem, "film", None) is not None

    def halo(self, t: int) -> int:
        """Receptive radius in pixels of both outputs for ``t`` dates.

        Encoder radius + the larger of shift radius and local-contrast radius + (t - 1)
        recurrent steps + decoder radius; computed from the layers.
        Chunked inference with at least this halo equals the whole-scene run.
        """
        if t < 1:
            raise ModelError(f"t: got {t} dates, expected >= 1")
        # The shift distances and the local contrast are side by side, not one after the other.
        enc = (
            _radius(self.stem) + _radius(self.encoder) + max(self.shift_radius, self.local_contrast)
        )
        if self.cloud is not None:  # the gate of a date depends on features this far around
            enc += _radius(self.cloud)
        rec = _radius(self.fwd)
        head = max(_radius(self.interval_head), _radius(self.decoder))
        return enc + (t - 1) * rec + head

    def _check(self, x: Tensor, valid: Tensor, wavelengths: Tensor | None) -> None:
        if x.ndim != 5:
            raise ModelError(f"x: got shape {tuple(x.shape)}, expected (b, t, c, h, w)")
        b, t, c, h, w = x.shape
        if t < 2:
            raise ModelError(f"x: got {t} date(s), expected at least 2 to detect change")
        if self.in_bands is not None and c != self.in_bands:
            raise ModelError(
                f"the model was trained on {self.in_bands} bands but the input has {c}; "
                "use the default band-agnostic model or retrain on this band count"
            )
        if self.spectral_bands and c != self.spectral_bands:
            raise ModelError(
                f"the model was taught on a scene of {self.spectral_bands} bands but the input "
                f"has {c}; teach it again on this sensor's bands or use the default model"
            )
        if tuple(valid.shape) != (b, t, h, w):
            raise ModelError(
                f"valid: got shape {tuple(valid.shape)}, expected {(b, t, h, w)} for x"
            )
        if wavelengths is not None and tuple(wavelengths.shape) != (b, c):
            raise ModelError(
                f"wavelengths: got shape {tuple(wavelengths.shape)}, expected {(b, c)} for x"
            )

    def forward(
        self,
        x: Tensor,
        valid: Tensor,
        wavelengths: Tensor | None = None,
        return_clouds: bool = False,
    ) -> tuple[Tensor, ...]:
        """Change and interval logits.

        Args:
            x: (b, t, c, h, w) float32 normalised bands, NaN-free.
            valid: (b, t, h, w) bool, False where the date is nodata / masked.
            wavelengths: (b, c) band centres in nm, NaN = unknown; None = all unknown. Used
                only by a model built with ``wavelengths=True``.
            return_clouds: also return the cloud head's logits (training).

        Returns:
            ``change_logit`` (b, h, w) and ``interval_logits`` (b, t-1, h, w); interval k is
            the change first seen on date k+1. Intervals that cannot hold a change get
            :data:`MASKED_LOGIT`. With ``return_clouds``, third: ``cloud_logits`` (b, t, h, w),
            or None for a model without a cloud head.
        """
        self._check(x, valid, wavelengths)
        b, t, c, h, w = x.shape
        valid = valid.to(torch.bool)
        wl = None
        if self.uses_wavelengths and wavelengths is not None:
            wl = wavelengths.to(device=x.device, dtype=x.dtype)
        cloud_logits = None
        raw: list[Tensor] | None = None
        if self.cloud is not None and (t >= 3 or return_clouds):  # two dates are never gated
            raw = [self.encoder(self.stem(x[:, i], wl)) for i in range(t)]
            cloud_logits = self._cloud_logits(raw, valid)
            if t >= 3:
                with torch.no_grad():
                    valid = valid & (torch.sigmoid(cloud_logits) < CLOUD_GATE)
        vmask = [valid[:, i, None] for i in range(t)]

        def encode(i: int) -> Tensor:
            return raw[i] if raw is not None else self.encoder(self.stem(x[:, i], wl))

        def step_input(i: int, prev: tuple[Tensor, Tensor | None] | None):
            """Date i's recurrent input and (features, match projection) to pass to date i+1."""
            f = encode(i)
            if prev is None:
                diff = torch.zeros_like(f)
            else:
                # An invalid date carries the last valid date's features: its difference is
                # zero and the next valid date is compared with the last valid one.
                f = torch.where(vmask[i], f, prev[0])
                diff = f - prev[0]
            parts = [f, diff]
            if self.local_contrast:
                parts.append(local_contrast(diff, self.local_contrast))
            m = None
            if self.match is not None:
                # Misregistration-tolerant distances to the previous date (both ways).
                m, r = self.match(f), self.shift_radius
                if prev is None:
                    parts.append(x.new_zeros(b, 2, h, w))
                else:
                    pm = prev[1]
                    assert pm is not None
                    parts.append(
                        torch.cat([shift_min_distance(m, pm, r), shift_min_distance(pm, m, r)], 1)
                    )
            return torch.cat(parts, dim=1), (f, m)

        # Dates run in segments. The forward pass keeps, per segment, only the state and the
        # carried features where it starts; the backward pass recomputes a segment's inputs
        # and forward states from there (the same operations on the same values: the same
        # result). Memory then grows with the number of segments and their length, about 2√t
        # dates' worth, not with t (a model with a cloud head keeps every date's features for
        # the head anyway). While training, or with fewer dates than a segment, it is one
        # segment, which is kept: nothing is recomputed.
        seg = t if torch.is_grad_enabled() else segment_length(t)
        starts = list(range(0, t, seg))
        zeros = x.new_zeros(b, self.hidden, h, w)

        def forward_segment(s: int, state: tuple, keep: bool):
            """The forward pass over the segment from date ``s``, from ``state`` (h, c and
            what :func:`step_input` passes on); with ``keep``, its inputs and states."""
            hf, cf, prev = state
            inputs: list[Tensor] = []
            states: list[Tensor] = []
            for i in range(s, min(s + seg, t)):
                inp, prev = step_input(i, prev)
                hf, cf = self.fwd.step(inp, hf, cf, vmask[i])
                if keep:
                    inputs.append(inp)
                    states.append(hf)
            return (hf, cf, prev), inputs, states

        # Forward: the state where each segment begins; the last segment's inputs and states.
        marks = [(zeros, zeros, None)]
        for s in starts:
            end, kept_inputs, kept_states = forward_segment(s, marks[-1], s == starts[-1])
            marks.append(end)
        h_last = marks[-1][0]

        # Interval k (date k+1 first shows the change) is possible where date k+1 is valid and
        # some earlier date is valid.
        seen = torch.cumsum(valid.to(torch.int32), dim=1) > 0  # (b, t, h, w)
        possible = valid[:, 1:] & seen[:, :-1]

        hb, cb = zeros, zeros
        logits: list[Tensor] = [x.new_empty(0)] * (t - 1)
        for n in range(len(starts) - 1, -1, -1):
            s, stop = starts[n], min(starts[n] + seg, t)
            if n == len(starts) - 1:
                inputs, h_fwd = kept_inputs, kept_states
                kept_inputs, kept_states = [], []
            else:
                _, inputs, h_fwd = forward_segment(s, marks[n], True)
            h_before = marks[n][0]  # the forward state after date s - 1
            for i in range(stop - 1, s - 1, -1):
                inp = inputs[i - s]
                hb, cb = self.bwd.step(inp, hb, cb, vmask[i])
                if i >= 1:
                    before = h_fwd[i - 1 - s] if i > s else h_before
                    z = torch.cat([before, hb, inp[:, self.features :]], dim=1)
                    logits[i - 1] = self.interval_head(z)[:, 0]
            del inputs, h_fwd
        final = torch.cat([h_last, hb], dim=1)
        interval = torch.stack(logits, dim=1)
        interval = torch.where(possible, interval, interval.new_tensor(MASKED_LOGIT))
        context = self.decoder(final)[:, 0]
        if self.skip is not None:
            context = context + self.skip(final)[:, 0]
        change = self.interval_evidence(interval) + context
        if self.spectral is not None:
            change = change + self.spectral_term(x, valid, final)
        if return_clouds:
            return change, interval, cloud_logits
        return change, interval

    def interval_evidence(self, interval: Tensor) -> Tensor:
        """(b, h, w) the interval term of the change logit from ``interval`` (b, t-1, h, w):
        the logsumexp over the intervals of the most telling ``change_window`` dates."""
        return window_logsumexp(interval, max(self.change_window - 1, 0))

    def spectral_term(self, x: Tensor, valid: Tensor, final: Tensor) -> Tensor:
        """(b, h, w) the spectral term of the change logit (see ``spectral_bands``)."""
        assert self.spectral is not None
        return self.spectral(torch.cat([*spectral_input(x, valid), final], dim=1))[:, 0]

    def _cloud_logits(self, feats: list[Tensor], valid: Tensor) -> Tensor:
        """(b, t, h, w) cloud/shadow logits of each date from its features and their difference
        to the pixel's closest other valid date (mean absolute feature difference; zero when
        no other date is valid)."""
        assert self.cloud is not None
        t = len(feats)
        out = []
        for i in range(t):
            best = torch.full_like(feats[i][:, :1], float("inf"))
            diff = torch.zeros_like(feats[i])
            for j in range(t):
                if j == i:
                    continue
                d_ij = feats[i] - feats[j]
                dist = d_ij.abs().mean(dim=1, keepdim=True)
                closer = valid[:, j, None] & (dist < best)
                best = torch.where(closer, dist, best)
                diff = torch.where(closer, d_ij, diff)
            out.append(self.cloud(torch.cat([feats[i], diff], dim=1))[:, 0])
        return torch.stack(out, dim=1)
