//! Frontend URLs as the client config lists them (`https://HOST:PORT/`), and frontend
//! names as the server config lists them (`HOST:PORT`).

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, thiserror::Error)]
#[error("`{url}` is not an agent URL (expected https://HOST:PORT/): {why}")]
pub struct UrlError {
    url: String,
    why: &'static str,
}

impl ServerUrl {
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let err = |why| UrlError {
            url: url.chars().take(200).collect(),
            why,
        };
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| err("scheme must be https"))?;
        let authority = rest.trim_end_matches('/');
        if authority.contains('/') {
            return Err(err("no path is allowed"));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| err("port is missing"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(err("host is empty"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| err("port is not a number 1-65535"))?;
        if port == 0 {
            return Err(err("port 0"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

/// A frontend's name: the HOST:PORT agents reach it at, which is also its name on the
/// replication stream and in the API. IPv6 hosts are written in brackets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    /// Parses `HOST:PORT` by the same rules as the host and port of a [`ServerUrl`], so a
    /// name always makes a valid agent URL.
    pub fn parse(name: &str) -> Result<Self, String> {
        let url = ServerUrl::parse(&format!("https://{name}/"))
            .map_err(|e| format!("`{name}` is not HOST:PORT: {}", e.why))?;
        Ok(Self {
            host: url.host,
            port: url.port,
        })
    }

    pub fn url(&self) -> ServerUrl {
        ServerUrl {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "https://[{}]:{}/", self.host, self.port)
        } else {
            write!(f, "https://{}:{}/", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects() {
        let u = ServerUrl::parse("https://127.0.0.1:8000/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", 8000));
        assert_eq!(u.to_string(), "https://127.0.0.1:8000/");
        assert!(ServerUrl::parse("http://h:1/").is_err());
        assert!(ServerUrl::parse("https://h/").is_err());
        assert!(ServerUrl::parse("https://h:99999/").is_err());
        assert!(ServerUrl::parse("https://h:80/x").is_err());
    }

    #[test]
    fn host_port_round_trips_and_names_the_problem() {
        for name in ["127.0.0.1:9100", "[::1]:9100", "fe.example:443"] {
            assert_eq!(HostPort::parse(name).unwrap().to_string(), name);
        }
        let v6 = HostPort::parse("[::1]:9100").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 9100));
        assert_eq!(v6.url().to_string(), "https://[::1]:9100/");
        for bad in ["no-port", "h:0", "h:99999", ":80", "h:80/x"] {
            let err = HostPort::parse(bad).unwrap_err();
            assert!(err.contains("HOST:PORT"), "{bad}: {err}");
        }
    }
}
