//! A device that swallows writes and reads as all ones: for port 0x80 POST
//! codes and other ports a guest pokes without needing an answer.

use crate::bus::BusDevice;

#[derive(Debug, Default, Clone, Copy)]
pub struct PortSink;

impl BusDevice for PortSink {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_all_ones() {
        let mut sink = PortSink;
        sink.write(0, &[1, 2]);
        let mut d = [0u8; 2];
        sink.read(0, &mut d);
        assert_eq!(d, [0xff, 0xff]);
    }
}
