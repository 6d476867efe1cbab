//! The byte layout of an established connection.
//!
//! After the handshake both directions carry a stream of Noise transport records, each
//! `[u16 big-endian length][ciphertext]` with at most 65535 ciphertext bytes. The decrypted records
//! concatenate into a plaintext stream of frames, each `[u32 big-endian length][body]`; a frame may
//! span many records and a record may hold many frames, so large messages are chunked and small ones
//! batched. A frame header that announces more than `frame_bytes_max` ends the connection before any
//! byte of that frame is buffered.
//!
//! Frame bodies start with a kind byte:
//! - `1` Data `[seq u64][payload]` (sender to receiver)
//! - `2` Ack `[seq u64]`: every Data frame up to `seq` was delivered (receiver to sender)
//! - `3` Resume `[session u64][base u64][process u64]`: first frame of a sender; `session` names
//!   the sender's sequence, `base` is the oldest sequence number it still holds, `process` is the
//!   sender process's nonce (random per start).
//! - `4` Welcome `[seq u64][process u64]`: the receiver's answer to Resume: every Data frame up to
//!   `seq` was delivered; `process` is the receiver process's nonce.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use snow::StatelessTransportState;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::LinkError;

/// The largest Noise message.
pub(crate) const RECORD_BYTES_MAX: usize = 65_535;
/// ChaCha20-Poly1305 tag.
const TAG_BYTES: usize = 16;
/// The most plaintext one record carries.
pub(crate) const RECORD_PLAINTEXT_BYTES_MAX: usize = RECORD_BYTES_MAX - TAG_BYTES;
/// Bytes before a Data payload: kind and sequence number.
pub(crate) const DATA_HEADER_BYTES: usize = 9;
/// Flush the writer once this much plaintext is pending, so a resend of a full buffer is streamed.
pub(crate) const WRITER_FLUSH_BYTES: usize = 256 * 1024;

const KIND_DATA: u8 = 1;
const KIND_ACK: u8 = 2;
const KIND_RESUME: u8 = 3;
const KIND_WELCOME: u8 = 4;

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    Data {
        seq: u64,
        payload: Bytes,
    },
    Ack {
        seq: u64,
    },
    Resume {
        session: u64,
        base: u64,
        process: u64,
    },
    /// The receiver's answer to `Resume`: the last delivered sequence number and the
    /// receiver's process nonce (a new one means the receiver restarted).
    Welcome {
        seq: u64,
        process: u64,
    },
}

impl Frame {
    fn decode(mut body: Bytes) -> Result<Frame, LinkError> {
        if body.is_empty() {
            return Err(LinkError::Protocol("empty frame"));
        }
        let kind = body.get_u8();
        let need = |body: &Bytes, bytes: usize| {
            if body.len() < bytes {
                Err(LinkError::Protocol("truncated frame"))
            } else {
                Ok(())
            }
        };
        match kind {
            KIND_DATA => {
                need(&body, 8)?;
                let seq = body.get_u64();
                Ok(Frame::Data { seq, payload: body })
            }
            KIND_ACK => {
                need(&body, 8)?;
                let seq = body.get_u64();
                if !body.is_empty() {
                    return Err(LinkError::Protocol("trailing bytes in ack"));
                }
                Ok(Frame::Ack { seq })
            }
            KIND_RESUME => {
                need(&body, 24)?;
                let session = body.get_u64();
                let base = body.get_u64();
                let process = body.get_u64();
                if !body.is_empty() {
                    return Err(LinkError::Protocol("trailing bytes in resume"));
                }
                Ok(Frame::Resume {
                    session,
                    base,
                    process,
                })
            }
            KIND_WELCOME => {
                need(&body, 16)?;
                let seq = body.get_u64();
                let process = body.get_u64();
                if !body.is_empty() {
                    return Err(LinkError::Protocol("trailing bytes in welcome"));
                }
                Ok(Frame::Welcome { seq, process })
            }
            _ => Err(LinkError::Protocol("unknown frame kind")),
        }
    }
}

/// Reads frames from one direction of a connection.
pub(crate) struct FrameReader<R> {
    read: R,
    cipher: Arc<StatelessTransportState>,
    nonce: u64,
    frame_bytes_max: usize,
    /// Decrypted bytes not yet returned as frames; at most one frame plus one record.
    plaintext: BytesMut,
    record: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(
        read: R,
        cipher: Arc<StatelessTransportState>,
        frame_bytes_max: usize,
    ) -> Self {
        Self {
            read,
            cipher,
            nonce: 0,
            frame_bytes_max,
            plaintext: BytesMut::new(),
            record: vec![0; RECORD_BYTES_MAX],
        }
    }

    /// The next frame; `None` when the peer closed the connection between frames.
    /// Not cancel-safe: a cancelled call leaves the connection unusable (callers then drop it).
    pub(crate) async fn next_frame(&mut self) -> Result<Option<Frame>, LinkError> {
        loop {
            if self.plaintext.len() >= 4 {
                let announced = u32::from_be_bytes([
                    self.plaintext[0],
                    self.plaintext[1],
                    self.plaintext[2],
                    self.plaintext[3],
                ]) as usize;
                if announced > self.frame_bytes_max {
                    return Err(LinkError::FrameTooLarge {
                        bytes: announced,
                        max: self.frame_bytes_max,
                    });
                }
                if self.plaintext.len() >= 4 + announced {
                    self.plaintext.advance(4);
                    let body = self.plaintext.split_to(announced).freeze();
                    return Frame::decode(body).map(Some);
                }
            }
            if !self.read_record().await? {
                return if self.plaintext.is_empty() {
                    Ok(None)
                } else {
                    Err(LinkError::Protocol("connection closed inside a frame"))
                };
            }
        }
    }

    /// Reads and decrypts one record into `plaintext`; `false` on a clean end of stream.
    async fn read_record(&mut self) -> Result<bool, LinkError> {
        let mut length = [0u8; 2];
        match self.read.read_exact(&mut length).await {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(error) => return Err(error.into()),
        }
        let length = usize::from(u16::from_be_bytes(length));
        if length < TAG_BYTES {
            return Err(LinkError::Protocol("record shorter than its tag"));
        }
        let ciphertext = &mut self.record[..length];
        self.read.read_exact(ciphertext).await?;
        let start = self.plaintext.len();
        self.plaintext.resize(start + length - TAG_BYTES, 0);
        let written =
            self.cipher
                .read_message(self.nonce, ciphertext, &mut self.plaintext[start..])?;
        self.plaintext.truncate(start + written);
        self.nonce += 1;
        Ok(true)
    }
}

/// Writes frames to one direction of a connection. Frames are buffered by `push_*` and sent by `flush`.
pub(crate) struct FrameWriter<W> {
    write: W,
    cipher: Arc<StatelessTransportState>,
    nonce: u64,
    plaintext: Vec<u8>,
    records: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    pub(crate) fn new(write: W, cipher: Arc<StatelessTransportState>) -> Self {
        Self {
            write,
            cipher,
            nonce: 0,
            plaintext: Vec::new(),
            records: Vec::new(),
        }
    }

    fn push_frame(&mut self, head: &[u8], tail: &[u8]) {
        let length = head.len() + tail.len();
        // Callers never build a frame beyond u32: messages are checked against MESSAGE_BYTES_MAX first.
        let length = u32::try_from(length).expect("frame length fits u32");
        self.plaintext.extend_from_slice(&length.to_be_bytes());
        self.plaintext.extend_from_slice(head);
        self.plaintext.extend_from_slice(tail);
    }

    pub(crate) fn push_data(&mut self, seq: u64, payload: &[u8]) {
        let mut head = [0u8; DATA_HEADER_BYTES];
        head[0] = KIND_DATA;
        head[1..].copy_from_slice(&seq.to_be_bytes());
        self.push_frame(&head, payload);
    }

    pub(crate) fn push_ack(&mut self, seq: u64) {
        let mut head = [0u8; 9];
        head[0] = KIND_ACK;
        head[1..].copy_from_slice(&seq.to_be_bytes());
        self.push_frame(&head, &[]);
    }

    pub(crate) fn push_welcome(&mut self, seq: u64, process: u64) {
        let mut head = [0u8; 17];
        head[0] = KIND_WELCOME;
        head[1..9].copy_from_slice(&seq.to_be_bytes());
        head[9..].copy_from_slice(&process.to_be_bytes());
        self.push_frame(&head, &[]);
    }

    pub(crate) fn push_resume(&mut self, session: u64, base: u64, process: u64) {
        let mut head = [0u8; 25];
        head[0] = KIND_RESUME;
        head[1..9].copy_from_slice(&session.to_be_bytes());
        head[9..17].copy_from_slice(&base.to_be_bytes());
        head[17..].copy_from_slice(&process.to_be_bytes());
        self.push_frame(&head, &[]);
    }

    /// Plaintext waiting for `flush`.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.plaintext.len()
    }

    /// Encrypts the pending plaintext into records and writes them.
    pub(crate) async fn flush(&mut self) -> Result<(), LinkError> {
        self.records.clear();
        for chunk in self.plaintext.chunks(RECORD_PLAINTEXT_BYTES_MAX) {
            let start = self.records.len();
            self.records.resize(start + 2 + chunk.len() + TAG_BYTES, 0);
            let written =
                self.cipher
                    .write_message(self.nonce, chunk, &mut self.records[start + 2..])?;
            self.nonce += 1;
            let length =
                u16::try_from(written).map_err(|_| LinkError::Protocol("record overflow"))?;
            self.records[start..start + 2].copy_from_slice(&length.to_be_bytes());
            self.records.truncate(start + 2 + written);
        }
        self.plaintext.clear();
        self.write.write_all(&self.records).await?;
        self.write.flush().await?;
        Ok(())
    }

    /// Raw access for tests that send what an honest writer never would.
    #[cfg(test)]
    pub(crate) fn push_raw_plaintext(&mut self, bytes: &[u8]) {
        self.plaintext.extend_from_slice(bytes);
    }
}
