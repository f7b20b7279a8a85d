//! A certificate authority made up for one test, and a TLS listener on
//! loopback that requires a client certificate, records its subject and
//! forwards the decrypted bytes to a plain broker (the mock cluster): what
//! a Heroku Kafka broker looks like to a client.

use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
};
use openssl::x509::{X509, X509NameBuilder};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A certificate with its private key.
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Issued {
    pub fn cert_pem(&self) -> String {
        String::from_utf8(self.cert.to_pem().unwrap()).unwrap()
    }

    /// The key as Heroku hands it over: PKCS#1, `BEGIN RSA PRIVATE KEY`.
    pub fn key_pem(&self) -> String {
        String::from_utf8(self.key.rsa().unwrap().private_key_to_pem().unwrap()).unwrap()
    }
}

fn name(cn: &str) -> openssl::x509::X509Name {
    let mut n = X509NameBuilder::new().unwrap();
    n.append_entry_by_text("CN", cn).unwrap();
    n.build()
}

fn builder(cn: &str, key: &PKey<Private>, serial: u32) -> openssl::x509::X509Builder {
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(&BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name(cn)).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    b
}

fn rsa() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

/// A self-signed certificate authority.
pub fn authority(cn: &str) -> Issued {
    let key = rsa();
    let mut b = builder(cn, &key, 1);
    b.set_issuer_name(&name(cn)).unwrap();
    b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
        .unwrap();
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    )
    .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    Issued {
        cert: b.build(),
        key,
    }
}

impl Issued {
    /// A certificate for a broker (`server`) or a client, signed by this CA.
    /// A broker's names only `dns` (never the address it listens on).
    pub fn issue(&self, cn: &str, server: bool, serial: u32) -> Issued {
        let key = rsa();
        let mut b = builder(cn, &key, serial);
        b.set_issuer_name(self.cert.subject_name()).unwrap();
        b.append_extension(BasicConstraints::new().build().unwrap())
            .unwrap();
        let mut usage = ExtendedKeyUsage::new();
        if server {
            usage.server_auth();
            let san = SubjectAlternativeName::new()
                .dns(cn)
                .build(&b.x509v3_context(Some(&self.cert), None))
                .unwrap();
            b.append_extension(san).unwrap();
        } else {
            usage.client_auth();
        }
        b.append_extension(usage.build().unwrap()).unwrap();
        b.sign(&self.key, MessageDigest::sha256()).unwrap();
        Issued {
            cert: b.build(),
            key,
        }
    }
}

/// A TLS listener in front of a plain broker.
pub struct TlsBroker {
    pub addr: SocketAddr,
    /// The common name of each client certificate a handshake completed with.
    pub clients: Arc<Mutex<Vec<String>>>,
}

impl TlsBroker {
    /// Serves TLS with `server`'s certificate, requires a client certificate
    /// issued by `client_ca`, and forwards to `upstream` (`host:port`).
    pub fn start(server: &Issued, client_ca: &X509, upstream: &str) -> TlsBroker {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_private_key(&server.key).unwrap();
        b.set_certificate(&server.cert).unwrap();
        b.check_private_key().unwrap();
        b.cert_store_mut().add_cert(client_ca.clone()).unwrap();
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        let acceptor = Arc::new(b.build());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let clients = Arc::new(Mutex::new(Vec::new()));
        let seen = clients.clone();
        let upstream = upstream.to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                let upstream = upstream.clone();
                // A failed accept: the client refused the broker's certificate.
                std::thread::spawn(move || {
                    if let Ok(tls) = acceptor.accept(stream) {
                        let cn = tls
                            .ssl()
                            .peer_certificate()
                            .and_then(|c| {
                                c.subject_name()
                                    .entries_by_nid(Nid::COMMONNAME)
                                    .next()
                                    .and_then(|e| e.data().to_string().ok())
                            })
                            .unwrap_or_default();
                        seen.lock().unwrap().push(cn);
                        forward(tls, &upstream);
                    }
                });
            }
        });
        TlsBroker { addr, clients }
    }
}

/// Copies both ways until either side closes (one thread, short read
/// timeouts: an SSL stream cannot be split across threads).
fn forward(mut tls: openssl::ssl::SslStream<TcpStream>, upstream: &str) {
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let tick = Some(Duration::from_millis(5));
    let _ = up.set_read_timeout(tick);
    let _ = tls.get_ref().set_read_timeout(tick);
    let idle = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if up.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
        match up.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tls.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if idle(&e) => {}
            Err(_) => return,
        }
    }
}
