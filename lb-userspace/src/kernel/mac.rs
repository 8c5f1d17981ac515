//! MAC addresses as the maps and netlink hold them.

/// A MAC address.
pub type Mac = [u8; 6];

/// `02:d1:00:00:00:11`.
pub fn format_mac(m: &Mac) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
}
