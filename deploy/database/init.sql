-- The Woodytoys schema, as the lab's services/database creates it, with its two seed products.
-- Run once by the MySQL image's entrypoint on an empty data directory (database `woody`).
CREATE DATABASE IF NOT EXISTS woody;
USE woody;

CREATE TABLE IF NOT EXISTS product (
    id INT AUTO_INCREMENT PRIMARY KEY,
    name VARCHAR(200)
);

-- `order` is a reserved word: it must be quoted everywhere.
CREATE TABLE IF NOT EXISTS `order` (
    order_id VARCHAR(200),
    status VARCHAR(200),
    product VARCHAR(200)
);

INSERT INTO product (id, name) VALUES (1, 'Yoyo'), (2, 'Joli train');
