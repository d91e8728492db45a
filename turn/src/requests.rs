//! STUN/TURN requests: Binding (RFC 8489), Allocate, Refresh, CreatePermission and
//! ChannelBind (RFC 8656 §7–§11), with long-term credential authentication.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_rs::attributes::stun::{
    Fingerprint, MessageIntegrity, MessageIntegritySha256, PasswordAlgorithm, PasswordAlgorithms,
    XorMappedAddress,
};
use stun_rs::attributes::turn::{
    AddressErrorCode, DontFragment, LifeTime, ReservationToken, XorRelayedAddress,
};
use stun_rs::methods::{ALLOCATE, BINDING, CHANNEL_BIND, CREATE_PERMMISSION, REFRESH};
use stun_rs::{
    AddressFamily, AlgorithmId, DecoderContextBuilder, HMACKey, MessageClass,
    MessageDecoderBuilder, StunAttribute, StunMessage,
};

use crate::allocation::{Allocation, BindError};
use crate::auth::NonceState;
use crate::message::{self, Error, Signing};
use crate::server::{Drop, FiveTuple, PortRequest, RelayPorts, Route, Timer, TurnServer};
use crate::wire::{CHANNEL_MAX, CHANNEL_MIN};

/// The result of a request handler: attributes of a success, or an error.
type Outcome = Result<Vec<StunAttribute>, Error>;

fn peers(msg: &StunMessage) -> Vec<SocketAddr> {
    msg.attributes()
        .iter()
        .filter_map(|a| a.as_xor_peer_address().ok())
        .map(|a| *a.socket_address())
        .collect()
}

/// The algorithm a request's key is derived with (RFC 8489 §9.2.4): MD5 when it names
/// none; otherwise it must echo the PASSWORD-ALGORITHMS the server sent and pick one of
/// them in PASSWORD-ALGORITHM, or `None` (400 Bad Request).
fn password_algorithm(msg: &StunMessage) -> Option<AlgorithmId> {
    let chosen = msg
        .get::<PasswordAlgorithm>()
        .map(|a| a.as_password_algorithm());
    let offered = msg
        .get::<PasswordAlgorithms>()
        .map(|a| a.as_password_algorithms());
    match (chosen, offered) {
        (None, None) => Some(AlgorithmId::MD5),
        (Some(Ok(chosen)), Some(Ok(offered)))
            if *offered == message::password_algorithms()
                && offered.iter().any(|a| a == chosen) =>
        {
            Some(chosen.algorithm())
        }
        _ => None,
    }
}

impl<R: RelayPorts> TurnServer<R> {
    pub(crate) fn handle_stun(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        data: &[u8],
        out: &mut Vec<u8>,
    ) -> Option<Route> {
        let Ok((msg, _)) = MessageDecoderBuilder::default().build().decode(data) else {
            return self.drop_packet(Drop::Malformed);
        };
        if msg.class() != MessageClass::Request {
            // Responses and indications other than Send are not for a server.
            return self.drop_packet(Drop::Malformed);
        }
        let fingerprint = msg.get::<Fingerprint>().is_some();
        let method = msg.method();
        // A server that cannot set the DF bit treats DONT-FRAGMENT in an Allocate as
        // unknown and comprehension-required (RFC 8656 §7.2).
        let df_unsupported = !self.cfg.dont_fragment && method == ALLOCATE;
        let unknown: Vec<u16> = msg
            .attributes()
            .iter()
            .filter(|a| {
                (a.is_unknown() && a.attribute_type().is_comprehension_required())
                    || (df_unsupported && a.is_dont_fragment())
            })
            .map(|a| a.attribute_type().as_u16())
            .collect();
        // Answers that need no credentials: unknown attributes, Binding, unknown methods.
        let unsigned = if !unknown.is_empty() {
            Some((
                MessageClass::ErrorResponse,
                message::unknown_attributes(&unknown),
            ))
        } else if method == BINDING {
            Some((
                MessageClass::SuccessResponse,
                vec![XorMappedAddress::from(tuple.client).into()],
            ))
        } else if ![ALLOCATE, REFRESH, CREATE_PERMMISSION, CHANNEL_BIND].contains(&method) {
            Some((
                MessageClass::ErrorResponse,
                vec![Error::BadRequest.attribute()],
            ))
        } else {
            None
        };
        if let Some((class, attrs)) = unsigned {
            return self.reply(out, tuple, &msg, class, attrs, None, fingerprint);
        }
        let (username, key) = match self.authenticate(now, tuple, data, &msg) {
            Ok(ok) => ok,
            Err(None) => return self.drop_packet(Drop::AuthRateLimited),
            Err(Some(attrs)) => {
                return self.reply(
                    out,
                    tuple,
                    &msg,
                    MessageClass::ErrorResponse,
                    attrs,
                    None,
                    fingerprint,
                );
            }
        };
        let outcome = if method == ALLOCATE {
            self.allocate(now, tuple, &msg, username, key.clone())
        } else {
            match self.allocations.get(&tuple) {
                None => Err(Error::AllocationMismatch),
                Some(a) if a.username != username => Err(Error::WrongCredentials),
                Some(_) if method == REFRESH => self.refresh(now, tuple, &msg),
                Some(_) if method == CREATE_PERMMISSION => self.create_permission(now, tuple, &msg),
                Some(_) => self.channel_bind(now, tuple, &msg),
            }
        };
        let (class, attrs) = match outcome {
            Ok(attrs) => (MessageClass::SuccessResponse, attrs),
            Err(e) => (MessageClass::ErrorResponse, vec![e.attribute()]),
        };
        self.reply(out, tuple, &msg, class, attrs, Some(&key), fingerprint)
    }

    #[allow(clippy::too_many_arguments)]
    fn reply(
        &self,
        out: &mut Vec<u8>,
        tuple: FiveTuple,
        req: &StunMessage,
        class: MessageClass,
        attrs: Vec<StunAttribute>,
        key: Option<&HMACKey>,
        fingerprint: bool,
    ) -> Option<Route> {
        let sha256 = req.get::<MessageIntegritySha256>().is_some()
            && req.get::<MessageIntegrity>().is_none();
        let signing = Signing {
            key,
            sha256,
            fingerprint,
        };
        message::write_response(out, req, class, attrs, &self.software, signing)
            .then_some(Route::Client(tuple))
    }

    /// Long-term credential check (RFC 8489 §9.2.4). `Err(Some(attrs))` is an error
    /// response to send; `Err(None)` means drop (rate limited).
    fn authenticate(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        data: &[u8],
        msg: &StunMessage,
    ) -> Result<(String, HMACKey), Option<Vec<StunAttribute>>> {
        let ip = tuple.client.ip();
        if self.auth_blocked(ip, now) {
            return Err(None);
        }
        let unix = self.unix(now);
        let challenge =
            |s: &Self, e: Error| Some(message::challenge(e, &s.creds.realm, &s.nonces.issue(unix)));
        let has_integrity = msg.get::<MessageIntegrity>().is_some()
            || msg.get::<MessageIntegritySha256>().is_some();
        if !has_integrity {
            return Err(challenge(self, Error::Unauthorized));
        }
        let username = msg
            .get::<stun_rs::attributes::stun::UserName>()
            .and_then(|a| a.as_user_name().ok());
        let realm = msg
            .get::<stun_rs::attributes::stun::Realm>()
            .and_then(|a| a.as_realm().ok());
        let nonce = msg
            .get::<stun_rs::attributes::stun::Nonce>()
            .and_then(|a| a.as_nonce().ok());
        let (Some(username), Some(realm), Some(nonce)) = (username, realm, nonce) else {
            return Err(Some(vec![Error::BadRequest.attribute()]));
        };
        if self.nonces.check(nonce.as_str(), unix) != NonceState::Valid {
            return Err(challenge(self, Error::StaleNonce));
        }
        if realm.as_str() != self.creds.realm {
            return Err(challenge(self, Error::Unauthorized));
        }
        let Some(algorithm) = password_algorithm(msg) else {
            return Err(Some(vec![Error::BadRequest.attribute()]));
        };
        let username = username.as_str().to_owned();
        let key = match self.creds.key_with(&username, unix, algorithm) {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(%ip, %username, error = %e, "authentication failed");
                self.auth_failed(ip, now);
                return Err(challenge(self, Error::Unauthorized));
            }
        };
        let ctx = DecoderContextBuilder::default()
            .with_key(key.clone())
            .with_validation()
            .build();
        if MessageDecoderBuilder::default()
            .with_context(ctx)
            .build()
            .decode(data)
            .is_err()
        {
            tracing::debug!(%ip, %username, "message integrity mismatch");
            self.auth_failed(ip, now);
            return Err(challenge(self, Error::Unauthorized));
        }
        Ok((username, key))
    }

    fn lifetime(&self, msg: &StunMessage) -> Duration {
        let requested = msg
            .get::<LifeTime>()
            .and_then(|a| a.as_life_time().ok())
            .map(|l| Duration::from_secs(u64::from(*l.as_ref())));
        requested
            .unwrap_or(self.cfg.default_lifetime)
            .min(self.cfg.max_lifetime)
            .max(self.cfg.default_lifetime)
    }

    fn allocate(
        &mut self,
        now: Instant,
        tuple: FiveTuple,
        msg: &StunMessage,
        username: String,
        key: HMACKey,
    ) -> Outcome {
        let tid = *msg.transaction_id().as_bytes();
        if let Some(a) = self.allocations.get(&tuple) {
            if a.created_by != tid {
                return Err(Error::AllocationMismatch);
            }
            // A retransmitted Allocate: answer as the first time (§7.2).
            let mut attrs: Vec<StunAttribute> = a
                .relays
                .iter()
                .map(|r| XorRelayedAddress::from(*r).into())
                .collect();
            attrs.push(LifeTime::from(a.lifetime).into());
            attrs.push(XorMappedAddress::from(tuple.client).into());
            return Ok(attrs);
        }
        let transport = msg
            .get::<stun_rs::attributes::turn::RequestedTrasport>()
            .and_then(|a| a.as_requested_trasport().ok())
            .ok_or(Error::BadRequest)?;
        if transport.protocol() != stun_rs::protocols::UDP {
            return Err(Error::UnsupportedTransport);
        }
        let token = msg
            .get::<ReservationToken>()
            .and_then(|a| a.as_reservation_token().ok())
            .map(|t| t.token().to_vec());
        let even_port = msg
            .get::<stun_rs::attributes::turn::EvenPort>()
            .and_then(|a| a.as_even_port().ok())
            .map(|e| e.reserve());
        let family = msg
            .get::<stun_rs::attributes::turn::RequestedAddressFamily>()
            .and_then(|a| a.as_requested_address_family().ok())
            .map(|f| f.family());
        let additional = msg
            .get::<stun_rs::attributes::turn::AdditionalAddressFamily>()
            .and_then(|a| a.as_additional_address_family().ok())
            .map(|f| f.family());
        let dont_fragment = msg.get::<DontFragment>().is_some();
        if token.is_some() && (even_port.is_some() || family.is_some()) {
            return Err(Error::BadRequest);
        }
        if additional.is_some() && (family.is_some() || additional != Some(AddressFamily::IPv6)) {
            return Err(Error::BadRequest);
        }
        if self.shared.total.load(std::sync::atomic::Ordering::Relaxed) >= self.cfg.max_allocations
        {
            return Err(Error::InsufficientCapacity);
        }
        if self
            .shared
            .per_user
            .lock()
            .get(&username)
            .copied()
            .unwrap_or(0)
            >= self.cfg.user_quota
        {
            return Err(Error::AllocationQuotaReached);
        }
        let ipv6 = family == Some(AddressFamily::IPv6);
        let mut attrs = Vec::new();
        let primary = match &token {
            Some(t) => {
                let t: [u8; 8] = t.as_slice().try_into().map_err(|_| Error::BadRequest)?;
                let reserved = self.shared.reservations.lock().remove(&t);
                match reserved {
                    Some((addr, until)) if until > now && self.relays.claim(addr) => addr,
                    Some((addr, _)) => {
                        self.relays.unreserve(addr);
                        return Err(Error::InsufficientCapacity);
                    }
                    None => return Err(Error::InsufficientCapacity),
                }
            }
            None => {
                let req = if even_port.is_some() {
                    PortRequest::Even
                } else {
                    PortRequest::Any
                };
                match self.relays.bind(ipv6, req) {
                    Some(a) => a,
                    None if ipv6 => return Err(Error::AddressFamilyNotSupported),
                    None => return Err(Error::InsufficientCapacity),
                }
            }
        };
        let mut relays = vec![primary];
        if even_port == Some(true) {
            match self.relays.reserve(ipv6, primary.port() + 1) {
                Some(next) => {
                    let mut t = [0u8; 8];
                    rand::fill(&mut t[..]);
                    self.shared
                        .reservations
                        .lock()
                        .insert(t, (next, now + self.cfg.reservation_lifetime));
                    attrs.push(ReservationToken::from(t).into());
                }
                None => {
                    self.relays.release(primary);
                    return Err(Error::InsufficientCapacity);
                }
            }
        }
        if additional == Some(AddressFamily::IPv6) {
            match self.relays.bind(true, PortRequest::Any) {
                Some(v6) => relays.push(v6),
                None => {
                    let code = stun_rs::ErrorCode::new(440, "Address Family not Supported")
                        .expect("valid");
                    attrs.push(AddressErrorCode::new(AddressFamily::IPv6, code).into());
                }
            }
        }
        let lifetime = self.lifetime(msg);
        let expires = now + lifetime;
        for r in &relays {
            self.by_relay.insert(*r, tuple);
            attrs.push(XorRelayedAddress::from(*r).into());
        }
        attrs.push(LifeTime::from(lifetime.as_secs() as u32).into());
        attrs.push(XorMappedAddress::from(tuple.client).into());
        *self
            .shared
            .per_user
            .lock()
            .entry(username.clone())
            .or_default() += 1;
        self.shared
            .total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.cfg.user_bandwidth > 0 {
            let rate = self.cfg.user_bandwidth;
            self.shared
                .buckets
                .lock()
                .entry(username.clone())
                .or_insert_with(|| crate::server::Bucket::new(now, rate))
                .refs += 1;
        }
        tracing::debug!(?tuple, ?relays, %username, "allocation created");
        let mut alloc = Allocation::new(
            username,
            key,
            relays,
            expires,
            tid,
            lifetime.as_secs() as u32,
        );
        alloc.dont_fragment = dont_fragment;
        self.allocations.insert(tuple, alloc);
        self.timers.insert((expires, Timer::Allocation(tuple)));
        self.stats.allocations_created += 1;
        Ok(attrs)
    }

    fn refresh(&mut self, now: Instant, tuple: FiveTuple, msg: &StunMessage) -> Outcome {
        let family = msg
            .get::<stun_rs::attributes::turn::RequestedAddressFamily>()
            .and_then(|a| a.as_requested_address_family().ok())
            .map(|f| f.family() == AddressFamily::IPv6);
        let zero = msg
            .get::<LifeTime>()
            .and_then(|a| a.as_life_time().ok())
            .is_some_and(|l| *l.as_ref() == 0);
        let alloc = self
            .allocations
            .get_mut(&tuple)
            .ok_or(Error::AllocationMismatch)?;
        if let Some(v6) = family
            && !alloc.relays.iter().any(|r| r.is_ipv6() == v6)
        {
            return Err(Error::PeerAddressFamilyMismatch);
        }
        if zero {
            self.remove_allocation(&tuple);
            return Ok(vec![LifeTime::from(0).into()]);
        }
        let lifetime = self.lifetime(msg);
        let alloc = self
            .allocations
            .get_mut(&tuple)
            .ok_or(Error::AllocationMismatch)?;
        alloc.expires = now + lifetime;
        alloc.lifetime = lifetime.as_secs() as u32;
        self.timers
            .insert((now + lifetime, Timer::Allocation(tuple)));
        Ok(vec![LifeTime::from(lifetime.as_secs() as u32).into()])
    }

    fn check_peer(&self, alloc: &Allocation, peer: SocketAddr) -> Result<(), Error> {
        if alloc.relay_for(peer).is_none() {
            return Err(Error::PeerAddressFamilyMismatch);
        }
        if !self.policy.permits(peer.ip()) {
            return Err(Error::Forbidden);
        }
        Ok(())
    }

    fn create_permission(&mut self, now: Instant, tuple: FiveTuple, msg: &StunMessage) -> Outcome {
        let peers = peers(msg);
        if peers.is_empty() {
            return Err(Error::BadRequest);
        }
        let alloc = self
            .allocations
            .get(&tuple)
            .ok_or(Error::AllocationMismatch)?;
        for p in &peers {
            self.check_peer(alloc, *p)?;
        }
        let fresh = peers
            .iter()
            .filter(|p| !alloc.has_permission(p.ip(), now))
            .count();
        if alloc.permission_count() + fresh > self.cfg.max_permissions {
            return Err(Error::InsufficientCapacity);
        }
        let until = now + self.cfg.permission_lifetime;
        let alloc = self
            .allocations
            .get_mut(&tuple)
            .ok_or(Error::AllocationMismatch)?;
        for p in peers {
            alloc.permit(p.ip(), until);
        }
        Ok(Vec::new())
    }

    fn channel_bind(&mut self, now: Instant, tuple: FiveTuple, msg: &StunMessage) -> Outcome {
        let number = msg
            .get::<stun_rs::attributes::turn::ChannelNumber>()
            .and_then(|a| a.as_channel_number().ok())
            .map(|c| c.number())
            .filter(|n| (CHANNEL_MIN..=CHANNEL_MAX).contains(n))
            .ok_or(Error::BadRequest)?;
        let peer = *peers(msg).first().ok_or(Error::BadRequest)?;
        let alloc = self
            .allocations
            .get(&tuple)
            .ok_or(Error::AllocationMismatch)?;
        self.check_peer(alloc, peer)?;
        let channel_until = now + self.cfg.channel_lifetime;
        let permission_until = now + self.cfg.permission_lifetime;
        let max = self.cfg.max_channels;
        let alloc = self
            .allocations
            .get_mut(&tuple)
            .ok_or(Error::AllocationMismatch)?;
        match alloc.bind(number, peer, channel_until, max) {
            Ok(()) => {
                alloc.permit(peer.ip(), permission_until);
                Ok(Vec::new())
            }
            Err(BindError::Conflict) => Err(Error::BadRequest),
            Err(BindError::TooMany) => Err(Error::InsufficientCapacity),
        }
    }
}
