use super::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

#[test]
fn classify_tells_a_client_hello_from_plaintext() {
    assert_eq!(classify(&[]), None);
    assert_eq!(classify(&[0x16]), None);
    assert_eq!(classify(&[0x16, 0x03]), Some(Sniffed::Tls));
    assert_eq!(
        classify(&[0x16, 0x03, 0x01, 0x02, 0x00]),
        Some(Sniffed::Tls)
    );
    assert_eq!(classify(b"GET / HTTP/1.1"), Some(Sniffed::Plaintext));
    assert_eq!(classify(b"PRI * HTTP/2.0"), Some(Sniffed::Plaintext));
    assert_eq!(classify(&[0x16, 0x02]), Some(Sniffed::Plaintext));
    assert_eq!(classify(&[0x17, 0x03]), Some(Sniffed::Plaintext));
    assert_eq!(classify(b"G"), Some(Sniffed::Plaintext));
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[tokio::test]
async fn sniff_waits_for_a_record_split_after_its_first_byte() {
    let (mut client, server) = pair().await;
    client.write_all(&[0x16]).await.unwrap();
    let sniffing = tokio::spawn(async move { (sniff(&server).await.unwrap(), server) });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!sniffing.is_finished());
    client.write_all(&[0x03, 0x01]).await.unwrap();
    let (sniffed, server) = sniffing.await.unwrap();
    assert_eq!(sniffed, Sniffed::Tls);
    // Nothing was consumed.
    let mut buf = [0u8; 3];
    let mut read = 0;
    while read < 3 {
        server.readable().await.unwrap();
        read += server.try_read(&mut buf[read..]).unwrap_or(0);
    }
    assert_eq!(buf, [0x16, 0x03, 0x01]);
}

#[tokio::test]
async fn sniff_reports_a_peer_that_closed_before_speaking() {
    let (client, server) = pair().await;
    drop(client);
    assert_eq!(sniff(&server).await.unwrap(), Sniffed::Closed);
}
