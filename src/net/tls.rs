//! TLS for station connections (`serve --tls-cert/--tls-key`, mutual with
//! `--tls-client-ca`) and for `gen --connect` (`--tls-ca/--tls-cert/--tls-key`),
//! with `rustls` (ring) and blocking sockets.
//!
//! A connection is read by one thread and written by another (a station's
//! thread reads frames while the pipeline thread writes its ACKs; a client
//! writes frames while its reader thread parses ACKs), so the rustls state
//! sits behind a mutex in a [`TlsConn`] shared by both, and no socket read
//! happens under that lock: the reading side ([`TlsReader`]) reads raw bytes
//! from the socket on its own (with the socket's read timeout, so idle and
//! stop checks keep working, during the handshake too), then takes the lock
//! only to feed them to rustls and take the plaintext out. A write takes the
//! lock, hands rustls the plaintext and writes the TLS records to the socket
//! (bounded by the socket's write timeout).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};

use super::Shutdown;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file (`flag` names it in errors).
///
/// # Errors
/// An unreadable file, bad PEM, or no certificate in it.
pub fn load_certs(flag: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {flag} {shown}: {}", pem_error(&e)))?;
    let certs: Vec<_> = iter
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{flag} {shown}: bad PEM: {}", pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!("{flag} {shown}: no PEM certificate in it"));
    }
    Ok(certs)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// An unreadable file, bad PEM, or no private key in it.
pub fn load_key(flag: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let shown = path.display();
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            format!("{flag} {shown}: no PEM private key in it")
        }
        rustls::pki_types::pem::Error::Io(io) => format!("cannot read {flag} {shown}: {io}"),
        other => format!("{flag} {shown}: bad PEM: {}", pem_error(&other)),
    })
}

fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

fn roots(flag: &str, path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    for c in load_certs(flag, path)? {
        store.add(c).map_err(|e| {
            format!(
                "{flag} {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(store)
}

/// The server side: the configuration every station connection uses.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    mutual: bool,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Loads the server's certificate chain and key, and with `client_ca`
    /// requires client certificates signed by it.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, a key that does not fit the
    /// certificate, a CA that is not usable: one line naming the flag.
    pub fn load(cert: &Path, key: &Path, client_ca: Option<&Path>) -> Result<ServerTls, String> {
        let certs = load_certs("--tls-cert", cert)?;
        let key = load_key("--tls-key", key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?;
        let builder = match client_ca {
            Some(ca) => {
                let store = roots("--tls-client-ca", ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider())
                        .build()
                        .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| format!("--tls-key does not fit --tls-cert: {e}"))?;
        Ok(ServerTls {
            config: Arc::new(config),
            mutual: client_ca.is_some(),
        })
    }

    /// True when client certificates are required.
    pub fn mutual(&self) -> bool {
        self.mutual
    }

    /// A new connection's TLS state over `sock`.
    ///
    /// # Errors
    /// When rustls cannot start a connection.
    pub fn accept(&self, sock: TcpStream) -> io::Result<TlsReader> {
        let conn = rustls::ServerConnection::new(Arc::clone(&self.config))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(TlsReader::new(sock, Connection::Server(conn)))
    }
}

/// The client side: how `gen --connect` checks the server and proves who it is.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// The name the server's certificate must carry; `None`: the host of
    /// the address connected to.
    pub server_name: Option<String>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in `ca`; presents `cert` and `key` when given.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, a cert without its key or the
    /// other way round, a key that does not fit: one line naming the flag.
    pub fn load(ca: &Path, cert: Option<&Path>, key: Option<&Path>) -> Result<ClientTls, String> {
        let store = roots("--tls-ca", ca)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(store);
        let config = match (cert, key) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(load_certs("--tls-cert", c)?, load_key("--tls-key", k)?)
                .map_err(|e| format!("--tls-key does not fit --tls-cert: {e}"))?,
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => return Err("--tls-cert needs --tls-key".into()),
            (None, Some(_)) => return Err("--tls-key needs --tls-cert".into()),
        };
        Ok(ClientTls {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// A new connection's TLS state over `sock`, to the server at `addr`
    /// ("host:port"; the host is the name checked unless `server_name` is set).
    ///
    /// # Errors
    /// A host that is not a valid server name, or rustls failing to start.
    pub fn connect(&self, sock: TcpStream, addr: &str) -> io::Result<TlsReader> {
        let host = match &self.server_name {
            Some(n) => n.clone(),
            None => host_of(addr).to_string(),
        };
        let name = ServerName::try_from(host.clone()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("'{host}' is not a valid TLS server name"),
            )
        })?;
        let conn = ClientConnection::new(Arc::clone(&self.config), name)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(TlsReader::new(sock, Connection::Client(conn)))
    }
}

/// The host of "host:port" or "\[v6\]:port".
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The TLS state of one connection, shared by its reading and writing sides.
pub struct TlsConn {
    sock: TcpStream,
    conn: Mutex<Connection>,
}

impl fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConn")
            .field("sock", &self.sock)
            .finish_non_exhaustive()
    }
}

impl TlsConn {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes out the TLS records rustls holds (bounded by the socket's
    /// write timeout: a timeout comes back as an error, the rest stays held).
    fn flush_locked(&self, c: &mut Connection) -> io::Result<()> {
        let mut w = &self.sock;
        while c.wants_write() {
            if c.write_tls(&mut w)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// Writes all of `bytes` (an ACK, a HELLO) and flushes.
    ///
    /// # Errors
    /// A socket error or the socket's write timeout.
    pub fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let mut c = self.lock();
        c.writer().write_all(bytes)?;
        self.flush_locked(&mut c)
    }

    /// Takes as much of `bytes` as rustls buffers (flushing what it held
    /// first). A flush that times out after the bytes were taken is not an
    /// error: they go out with the next write or flush.
    ///
    /// # Errors
    /// `WouldBlock`/`TimedOut` when nothing could be taken; a socket error.
    pub fn write(&self, bytes: &[u8]) -> io::Result<usize> {
        let mut c = self.lock();
        self.flush_locked(&mut c)?;
        let n = c.writer().write(bytes)?;
        if n == 0 && !bytes.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        match self.flush_locked(&mut c) {
            Err(e) if !super::is_retry(&e) => Err(e),
            _ => Ok(n),
        }
    }

    /// Writes out what rustls still holds (a write that timed out after its
    /// bytes were taken). A timeout is not an error: the rest stays held.
    ///
    /// # Errors
    /// A socket error.
    pub fn flush(&self) -> io::Result<()> {
        let mut c = self.lock();
        match self.flush_locked(&mut c) {
            Err(e) if !super::is_retry(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Sends close_notify and flushes what is held, retrying timeouts until
    /// `deadline`.
    pub fn close(&self, deadline: Instant) {
        let mut c = self.lock();
        c.send_close_notify();
        loop {
            match self.flush_locked(&mut c) {
                Err(e) if super::is_retry(&e) && Instant::now() < deadline => {}
                _ => return,
            }
        }
    }

    /// The socket under it.
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// The peer's identity: its certificate's subject common name, or its
    /// first DNS subject alternative name (`None` without a certificate).
    pub fn peer_identity(&self) -> Option<String> {
        let c = self.lock();
        let certs = c.peer_certificates()?;
        identity(certs.first()?.as_ref())
    }
}

/// The reading side of a [`TlsConn`]: a [`Read`] of the plaintext. Socket
/// timeouts come back as `WouldBlock`/`TimedOut` errors, as from the socket.
pub struct TlsReader {
    tls: Arc<TlsConn>,
    /// Bytes read from the socket not yet taken by rustls.
    raw: Vec<u8>,
    eof: bool,
}

impl fmt::Debug for TlsReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsReader")
            .field("raw", &self.raw.len())
            .field("eof", &self.eof)
            .finish_non_exhaustive()
    }
}

/// A TLS protocol or certificate error, as an `InvalidData` io::Error that
/// holds the [`rustls::Error`].
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// True when `e` (from a handshake or a read) is a certificate problem: no
/// client certificate, or one that does not verify (unknown issuer,
/// expired, ...).
pub fn is_certificate_error(e: &io::Error) -> bool {
    matches!(
        e.get_ref().and_then(|x| x.downcast_ref::<rustls::Error>()),
        Some(
            rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::AlertReceived(
                    rustls::AlertDescription::BadCertificate
                        | rustls::AlertDescription::UnknownCA
                        | rustls::AlertDescription::CertificateExpired
                        | rustls::AlertDescription::CertificateRequired
                )
        )
    )
}

impl TlsReader {
    fn new(sock: TcpStream, conn: Connection) -> TlsReader {
        TlsReader {
            tls: Arc::new(TlsConn {
                sock,
                conn: Mutex::new(conn),
            }),
            raw: Vec::new(),
            eof: false,
        }
    }

    /// The shared state, for the writing side.
    pub fn conn(&self) -> &Arc<TlsConn> {
        &self.tls
    }

    /// Feeds held raw bytes to rustls (under the lock) and writes what it
    /// wants to send back (handshake messages, alerts).
    fn feed(&mut self, c: &mut Connection) -> io::Result<()> {
        if !self.raw.is_empty() {
            let mut s: &[u8] = &self.raw;
            let n = c.read_tls(&mut s)?;
            if n == 0 {
                // Closed (close_notify) with bytes after it, or nothing taken:
                // either way no progress is possible.
                self.raw.clear();
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS input after the end of the connection",
                ));
            }
            self.raw.drain(..n);
            if let Err(e) = c.process_new_packets() {
                // The alert, if it can go.
                let _ = self.tls.flush_locked(c);
                return Err(tls_error(e));
            }
        }
        match self.tls.flush_locked(c) {
            Err(e) if !super::is_retry(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// One read of the socket into `raw` (outside the lock). False at end of file.
    fn fill(&mut self) -> io::Result<bool> {
        // Straight into `raw` (empty here), up to 64 KiB a read as plain
        // streams read: a few TLS records per system call.
        let had = self.raw.len();
        self.raw.resize(had + 64 * 1024, 0);
        let got = (&self.tls.sock).read(&mut self.raw[had..]);
        self.raw.truncate(had + *got.as_ref().unwrap_or(&0));
        let n = got?;
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        Ok(true)
    }

    /// Runs the handshake to its end, reading with the socket's timeout,
    /// until `deadline` or a stop (an error of kind `TimedOut`).
    ///
    /// # Errors
    /// A TLS error (kind `InvalidData`, see [`is_certificate_error`]), the
    /// peer closing, a socket error, or the deadline.
    pub fn handshake(&mut self, deadline: Instant, stop: &Shutdown) -> io::Result<()> {
        loop {
            {
                let tls = Arc::clone(&self.tls);
                let mut c = tls.lock();
                self.feed(&mut c)?;
                if !c.is_handshaking() {
                    return Ok(());
                }
                if !self.raw.is_empty() {
                    continue;
                }
            }
            if Instant::now() >= deadline || stop.requested() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake not finished in time",
                ));
            }
            match self.fill() {
                Ok(true) => {}
                Ok(false) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed during the TLS handshake",
                    ))
                }
                Err(e) if super::is_retry(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            {
                let tls = Arc::clone(&self.tls);
                let mut c = tls.lock();
                match c.reader().read(buf) {
                    Ok(n) => return Ok(n), // 0: close_notify
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if !self.raw.is_empty() {
                    self.feed(&mut c)?;
                    continue;
                }
                if self.eof {
                    return Ok(0);
                }
            }
            if !self.fill()? {
                return Ok(0);
            }
        }
    }
}

// ---- The identity in a certificate: a small DER walk. ----

/// One DER element: (tag, contents, the rest after it).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| (a << 8) | b as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed DER value.
fn elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, body, rest) = der(input)?;
        input = rest;
        Some((tag, body))
    })
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_SAN: &[u8] = &[0x55, 0x1d, 0x11];

/// A certificate's identity: the subject's common name, else its first DNS
/// subject alternative name. `None` when it has neither, or is not DER.
pub fn identity(cert: &[u8]) -> Option<String> {
    let (0x30, cert, _) = der(cert)? else {
        return None;
    };
    let (0x30, tbs, _) = der(cert)? else {
        return None;
    };
    let mut fields = elements(tbs).peekable();
    if fields.peek().is_some_and(|(t, _)| *t == 0xa0) {
        fields.next(); // version
    }
    // serial, signature, issuer, validity, subject, key
    let mut fields = fields.skip(4);
    let (_, subject) = fields.next()?;
    let cn = elements(subject)
        .filter(|(t, _)| *t == 0x31)
        .flat_map(|(_, set)| elements(set))
        .find_map(|(_, atv)| {
            let mut it = elements(atv);
            let (oid_tag, oid) = it.next()?;
            let (tag, value) = it.next()?;
            let text = matches!(tag, 0x0c | 0x13 | 0x16 | 0x14);
            (oid_tag == 0x06 && oid == OID_CN && text)
                .then(|| String::from_utf8(value.to_vec()).ok())
                .flatten()
        });
    if cn.is_some() {
        return cn;
    }
    let (_, exts) = fields.skip(1).find(|(t, _)| *t == 0xa3)?;
    let (0x30, exts, _) = der(exts)? else {
        return None;
    };
    elements(exts).find_map(|(_, ext)| {
        let mut it = elements(ext);
        let (_, oid) = it.next()?;
        if oid != OID_SAN {
            return None;
        }
        let (_, value) = it.find(|(t, _)| *t == 0x04)?;
        let (0x30, names, _) = der(value)? else {
            return None;
        };
        elements(names)
            .find(|(t, _)| *t == 0x82)
            .and_then(|(_, n)| String::from_utf8(n.to_vec()).ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: Option<&str>, sans: &[&str]) -> Vec<u8> {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(cn) = cn {
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, "Meridian test");
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn identity_is_the_common_name_else_the_first_dns_name() {
        assert_eq!(
            identity(&cert(Some("gs0"), &["other"])).as_deref(),
            Some("gs0")
        );
        assert_eq!(
            identity(&cert(None, &["gs1", "gs2"])).as_deref(),
            Some("gs1")
        );
        assert_eq!(identity(&cert(None, &[])), None);
        assert_eq!(identity(b"not a certificate"), None);
        assert_eq!(identity(&[]), None);
    }

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("localhost:7700"), "localhost");
        assert_eq!(host_of("127.0.0.1:7700"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7700"), "::1");
    }
}
