//! The router's simulcast side: the layers of a published track, their measured
//! rates, and keyframe requests per layer.

use std::time::Instant;

use super::{Layer, MAX_LAYERS, MAX_RID_LEN, Router};
use crate::ids::TrackId;
use crate::keyframe::KeyframeThrottle;
use crate::picture::Size;
use crate::simulcast::{LayerInfo, RateMeter, order_rids};

impl Layer {
    /// Its measured bitrate.
    pub fn bitrate_bps(&self) -> u64 {
        self.meter.rate_bps()
    }

    /// Whether the publisher is sending it.
    pub fn active(&self, now: Instant) -> bool {
        self.meter.active(now)
    }
}

impl Router {
    /// Declares the simulcast layers of a video track from the publisher's SDP
    /// (`a=simulcast:send`, RFC 8853 §5.1), in any order; they are ranked low to high
    /// by [`order_rids`]. Beyond [`MAX_LAYERS`], overlong or repeated rids are ignored.
    /// Returns how many layers the track has.
    pub fn set_layers(&mut self, track: TrackId, rids: &[&str]) -> usize {
        let Some(t) = self.tracks.get_mut(&track) else {
            return 0;
        };
        if !t.kind.is_video() {
            return 0;
        }
        let mut accepted: Vec<&str> = Vec::new();
        for rid in rids {
            if accepted.len() < MAX_LAYERS
                && !rid.is_empty()
                && rid.len() <= MAX_RID_LEN
                && !accepted.contains(rid)
            {
                accepted.push(rid);
            }
        }
        // One rid is no simulcast: it is forwarded as the unlayered stream.
        if accepted.len() < 2 {
            t.layers.clear();
            return 0;
        }
        t.layers = order_rids(&accepted)
            .into_iter()
            .map(|i| Layer {
                rid: accepted[i].into(),
                meter: RateMeter::default(),
                keyframe: KeyframeThrottle::new(self.config.keyframe_min_interval),
                size: None,
            })
            .collect();
        t.layers.len()
    }

    /// The layers of a track, low to high (empty: unlayered).
    pub fn layers(&self, track: TrackId) -> &[Layer] {
        self.tracks
            .get(&track)
            .map(|t| t.layers.as_slice())
            .unwrap_or_default()
    }

    /// The layer index of `rid` on `track`.
    pub fn layer_of(&self, track: TrackId, rid: &str) -> Option<usize> {
        self.tracks
            .get(&track)?
            .layers
            .iter()
            .position(|l| &*l.rid == rid)
    }

    /// Counts a frame of `bytes` received on `track` (on `layer`, if layered).
    pub fn record_frame(
        &mut self,
        track: TrackId,
        layer: Option<usize>,
        bytes: usize,
        now: Instant,
    ) {
        let Some(t) = self.tracks.get_mut(&track) else {
            return;
        };
        match layer.and_then(|i| t.layers.get_mut(i)) {
            Some(l) => l.meter.add(bytes, now),
            None => t.meter.add(bytes, now),
        }
    }

    /// Records the picture size of a keyframe received on `track` (on `layer`, if
    /// layered); returns the previous size when it changed.
    pub fn record_keyframe_size(
        &mut self,
        track: TrackId,
        layer: Option<usize>,
        size: Size,
    ) -> Option<Option<Size>> {
        let t = self.tracks.get_mut(&track)?;
        let slot = match layer {
            Some(i) => &mut t.layers.get_mut(i)?.size,
            None => &mut t.size,
        };
        (*slot != Some(size)).then(|| slot.replace(size))
    }

    /// Picture size of the latest keyframe of `track` (of `layer`, if layered).
    pub fn keyframe_size(&self, track: TrackId, layer: Option<usize>) -> Option<Size> {
        let t = self.tracks.get(&track)?;
        match layer {
            Some(i) => t.layers.get(i)?.size,
            None => t.size,
        }
    }

    /// Bitrate of a track's unlayered stream.
    pub fn track_bitrate(&self, track: TrackId) -> u64 {
        self.tracks.get(&track).map_or(0, |t| t.meter.rate_bps())
    }

    /// What the allocator needs of each layer of `track`, into `out`; an unlayered
    /// track is one layer (its whole stream).
    pub fn layer_infos(&self, track: TrackId, now: Instant, out: &mut Vec<LayerInfo>) {
        out.clear();
        let Some(t) = self.tracks.get(&track) else {
            return;
        };
        let info = |meter: &RateMeter| LayerInfo {
            bitrate_bps: meter.rate_bps(),
            active: meter.active(now),
        };
        if t.layers.is_empty() {
            out.push(info(&t.meter));
        } else {
            out.extend(t.layers.iter().map(|l| info(&l.meter)));
        }
    }

    /// A subscriber needs a keyframe of one layer of `track` (switching to it, or
    /// lost pictures on it): whether the request goes to the publisher now. Layer 0 of
    /// an unlayered track is the track.
    pub fn request_layer_keyframe(&mut self, track: TrackId, layer: usize, now: Instant) -> bool {
        let Some(t) = self.tracks.get_mut(&track) else {
            return false;
        };
        if t.layers.is_empty() && layer == 0 {
            return self.request_keyframe(track, now);
        }
        match t.layers.get_mut(layer) {
            Some(l) => l.keyframe.allow(now),
            None => false,
        }
    }
}
