//! Users and groups of a world, from its own `/etc/passwd` and `/etc/group`
//! (formats in passwd(5) and group(5)).

/// A user resolved in a world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub name: Option<String>,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: those that list the user as a member.
    pub groups: Vec<u32>,
    pub home: String,
}

/// The part of a user specification that did not resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    UnknownUser(String),
    UnknownGroup(String),
}

/// Resolves `spec`, `USER` or `USER:GROUP` where each part is a name or a
/// number, against the text of a world's `/etc/passwd` and `/etc/group`.
///
/// A number not in `/etc/passwd` is used as it is, with group and home of
/// its own number and `/`.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ResolvedUser, LookupError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let entry = passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let (name, uid) = (*fields.first()?, *fields.get(2)?);
        (name == user_part || uid == user_part).then_some(fields)
    });
    let mut user = match entry {
        Some(fields) => ResolvedUser {
            name: Some(fields[0].to_owned()),
            uid: fields[2].parse().unwrap_or(0),
            gid: fields.get(3).and_then(|gid| gid.parse().ok()).unwrap_or(0),
            groups: Vec::new(),
            home: fields.get(5).map_or("/", |home| home).to_owned(),
        },
        None => {
            let uid: u32 = user_part
                .parse()
                .map_err(|_| LookupError::UnknownUser(user_part.to_owned()))?;
            ResolvedUser {
                name: None,
                uid,
                gid: uid,
                groups: Vec::new(),
                home: "/".to_owned(),
            }
        }
    };

    if let Some(group_part) = group_part {
        let found = group.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let (name, gid) = (*fields.first()?, *fields.get(2)?);
            (name == group_part || gid == group_part).then(|| gid.parse().ok())?
        });
        user.gid = match found {
            Some(gid) => gid,
            None => group_part
                .parse()
                .map_err(|_| LookupError::UnknownGroup(group_part.to_owned()))?,
        };
    }
    // An id of 2^32 - 1 is -1 to setresuid(2) and setresgid(2), which then
    // keep the caller's id: root.
    if user.uid == u32::MAX {
        return Err(LookupError::UnknownUser(user_part.to_owned()));
    }
    if user.gid == u32::MAX {
        return Err(LookupError::UnknownGroup(
            group_part.unwrap_or(user_part).to_owned(),
        ));
    }
    if let Some(name) = &user.name {
        user.groups = group
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split(':').collect();
                let members = fields.get(3)?;
                let gid: u32 = fields.get(2)?.parse().ok()?;
                members
                    .split(',')
                    .any(|member| member == name)
                    .then_some(gid)
            })
            .filter(|gid| *gid != user.gid)
            .collect();
    }
    Ok(user)
}

/// The largest account file that [`read_account_file`] reads.
const ACCOUNT_FILE_MAX: u64 = 16 << 20;

/// Returns the text of the world's account file `etc/NAME` (`passwd` or
/// `group`) under the world's root `root`, or an empty text when it is
/// missing, is not a regular file or is reached through a symlink. The file
/// is opened beneath the root without following symlinks and without
/// blocking on a fifo, because the world's root user controls it.
pub fn read_account_file(root: &std::path::Path, name: &str) -> String {
    use std::io::Read;
    let read = || -> std::io::Result<String> {
        let etc = crate::sys::beneath::Dir::open(root)?.open_dir(b"etc")?;
        let file = etc.open_file(std::ffi::OsStr::new(name))?;
        if file.metadata()?.file_type().is_file() {
            let mut text = String::new();
            file.take(ACCOUNT_FILE_MAX).read_to_string(&mut text)?;
            return Ok(text);
        }
        Ok(String::new())
    };
    read().unwrap_or_default()
}

/// Returns the login shell of `user`, a name or a number, from the text
/// of `/etc/passwd`, when it names one.
pub fn login_shell(passwd: &str, user: &str) -> Option<String> {
    let user = user.split(':').next().unwrap_or(user);
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let matches = fields.first() == Some(&user) || fields.get(2) == Some(&user);
        let shell = fields.get(6).filter(|shell| !shell.is_empty())?;
        matches.then(|| (*shell).to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin\n\
        alice:x:1000:1000:Alice:/home/alice:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nwww-data:x:33:\nalice:x:1000:\nadm:x:4:alice,bob\nstaff:x:50:alice\n";

    #[test]
    fn login_shells() {
        assert_eq!(login_shell(PASSWD, "root").as_deref(), Some("/bin/sh"));
        assert_eq!(
            login_shell(PASSWD, "33").as_deref(),
            Some("/usr/sbin/nologin")
        );
        assert_eq!(login_shell(PASSWD, "alice:adm").as_deref(), Some("/bin/sh"));
        assert_eq!(login_shell(PASSWD, "mallory"), None);
    }

    /// Expected uid, gid, home and supplementary groups.
    type Expected = Result<(u32, u32, &'static str, &'static [u32]), LookupError>;

    #[test]
    fn user_specs() {
        let cases: &[(&str, Expected)] = &[
            ("root", Ok((0, 0, "/root", &[]))),
            ("0", Ok((0, 0, "/root", &[]))),
            ("alice", Ok((1000, 1000, "/home/alice", &[4, 50]))),
            ("alice:adm", Ok((1000, 4, "/home/alice", &[50]))),
            ("www-data:0", Ok((33, 0, "/var/www", &[]))),
            ("4242", Ok((4242, 4242, "/", &[]))),
            ("4242:77", Ok((4242, 77, "/", &[]))),
            ("mallory", Err(LookupError::UnknownUser("mallory".into()))),
            (
                "4294967295",
                Err(LookupError::UnknownUser("4294967295".into())),
            ),
            (
                "alice:wheel",
                Err(LookupError::UnknownGroup("wheel".into())),
            ),
        ];
        for (spec, expected) in cases {
            let found = resolve(spec, PASSWD, GROUP)
                .map(|user| (user.uid, user.gid, user.home.clone(), user.groups.clone()));
            let expected = expected
                .clone()
                .map(|(uid, gid, home, groups)| (uid, gid, home.to_owned(), groups.to_vec()));
            assert_eq!(found, expected, "user spec {spec:?}");
        }
    }
}
